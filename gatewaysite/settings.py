"""Settings for the gateway.

With nothing set in the environment the gateway runs on the embedded default: SQLite, a
local-memory cache, in-process counters and background work run in process. Production sets
DATABASE_URL (PostgreSQL), REDIS_URL, CELERY_BROKER_URL, DJANGO_SECRET_KEY and
GATEWAY_ENCRYPTION_KEY.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
DEV_SECRET_KEY = "insecure-dev-key-never-use-in-production"  # noqa: S105 (a marker, not a secret)

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")  # optional; `make run` writes one with fresh secrets

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default=DEV_SECRET_KEY)
if not DEBUG and SECRET_KEY in ("", DEV_SECRET_KEY):
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY must be set when DEBUG is off "
        "(`make run` writes a fresh one to .env; production sets it in the environment)."
    )

# Fernet key (urlsafe base64 of 32 bytes) that encrypts provider credentials at rest. When it is
# not set it is derived from SECRET_KEY, which is fine for the embedded default; production
# should set it so that SECRET_KEY can be rotated without losing stored credentials.
GATEWAY_ENCRYPTION_KEY = env.str("GATEWAY_ENCRYPTION_KEY", default="")

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "governance",
    "proxy",
    "telemetry",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "gatewaysite.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "gatewaysite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database() -> dict[str, Any]:
    config: dict[str, Any] = env.db(
        "DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'gateway.sqlite3'}"
    )
    if config["ENGINE"] == "django.db.backends.postgresql":
        # Under ASGI persistent connections leak across event-loop threads; Django's own docs
        # recommend CONN_MAX_AGE=0 together with psycopg's connection pool.
        config["CONN_MAX_AGE"] = 0
        if env.bool("DATABASE_POOL", default=True):
            config.setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": 10}
    elif config["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets the admin read while the ledger writer writes.
        config.setdefault("OPTIONS", {})["init_command"] = "PRAGMA journal_mode=WAL;"
        config["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    return config


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis, when set, backs the shared cache (policy version, snapshots) and the admission counters.
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            # Pinned to Django's built-in backend: django-environ would silently pick django-redis
            # if it happened to be installed.
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("GATEWAY_CACHE_PREFIX", default="gw"),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL  # no broker: tasks run in process
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TIMEZONE = "UTC"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve STATIC_ROOT (filled by `collectstatic`) through Django itself, so the admin has its CSS
# with DEBUG off and no web server in front: `make run` and the docker image turn this on. Off
# by default, for deployments where a reverse proxy or CDN serves /static/.
GATEWAY_SERVE_STATIC = env.bool("GATEWAY_SERVE_STATIC", default=False)

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
}
SPECTACULAR_SETTINGS = {"TITLE": "Claude gateway API", "VERSION": "1"}

# How long a gateway process may serve a policy snapshot before re-checking the shared version.
GATEWAY_POLICY_CHECK_SECONDS = env.float("GATEWAY_POLICY_CHECK_SECONDS", default=1.0)
# Without Redis, the policy version is a number in this file (shared by the processes of one
# machine: the gateway, `apply_config`, the admin).
# Without a Celery broker, the periodic jobs (rollups, alerts, periods, reconciliation,
# retention) run inside the gateway process; GATEWAY_IN_PROCESS_JOBS=false turns that off.
GATEWAY_IN_PROCESS_JOBS = env.bool("GATEWAY_IN_PROCESS_JOBS", default=True)
GATEWAY_ROLLUP_SETTLE_SECONDS = env.float("GATEWAY_ROLLUP_SETTLE_SECONDS", default=30.0)
GATEWAY_POLICY_VERSION_FILE = env.str(
    "GATEWAY_POLICY_VERSION_FILE", default=str(BASE_DIR / "var" / "policy-version")
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # httpx logs every request's full URL at INFO, and alert webhook URLs carry tokens.
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}

# --- the proxy (hot path) -----------------------------------------------------------------
GATEWAY_COUNTER_PREFIX = env.str("GATEWAY_COUNTER_PREFIX", default="gw:c")
GATEWAY_MAX_BODY_BYTES = env.int("GATEWAY_MAX_BODY_BYTES", default=32 * 1024 * 1024)
# Output tokens reserved per request at admission (see proxy/admission.py for the bound).
GATEWAY_RESERVE_OUTPUT_TOKENS = env.int("GATEWAY_RESERVE_OUTPUT_TOKENS", default=4096)
# Reserve the full max_tokens instead: budgets then never overshoot, at the price of refusing
# earlier as a budget nears its end.
GATEWAY_STRICT_BUDGETS = env.bool("GATEWAY_STRICT_BUDGETS", default=False)
GATEWAY_AUTH_FAILURES_PER_MINUTE = env.int("GATEWAY_AUTH_FAILURES_PER_MINUTE", default=30)
# Usage events the ledger could not take (database down) wait here and are replayed.
GATEWAY_SPOOL_DIR = env.str("GATEWAY_SPOOL_DIR", default=str(BASE_DIR / "var" / "spool"))
GATEWAY_SPOOL_REPLAY_SECONDS = env.float("GATEWAY_SPOOL_REPLAY_SECONDS", default=5.0)

# --- email (budget alerts) ----------------------------------------------------------------
# EMAIL_URL, e.g. smtp+tls://user:password@smtp.example.com:587; the default prints each mail
# to the console. EMAIL_TIMEOUT keeps a hung SMTP server from stalling the alert job.
_EMAIL = env.email_url("EMAIL_URL", default="consolemail://")
EMAIL_BACKEND = _EMAIL["EMAIL_BACKEND"]
EMAIL_HOST = _EMAIL.get("EMAIL_HOST") or "localhost"
EMAIL_PORT = _EMAIL.get("EMAIL_PORT") or 25
EMAIL_HOST_USER = _EMAIL.get("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = _EMAIL.get("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = bool(_EMAIL.get("EMAIL_USE_TLS", False))
EMAIL_USE_SSL = bool(_EMAIL.get("EMAIL_USE_SSL", False))
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="gateway@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- observability (telemetry/metrics.py, telemetry/exporters/) ---------------------------
# /metrics names at most this many keys in its `key` label; the rest are "other" (cardinality).
GATEWAY_METRICS_MAX_KEYS = env.int("GATEWAY_METRICS_MAX_KEYS", default=200)
GATEWAY_METRICS_TOP_KEYS_REFRESH_SECONDS = env.float(
    "GATEWAY_METRICS_TOP_KEYS_REFRESH_SECONDS", default=300.0
)
# When set, /metrics needs `Authorization: Bearer <token>`.
GATEWAY_METRICS_TOKEN = env.str("GATEWAY_METRICS_TOKEN", default="")
# Datadog metrics export is on when DD_API_KEY is set. DD_API_URL overrides the intake's base URL
# (default https://api.<DD_SITE>), e.g. for a proxy or a test intake.
DD_API_KEY = env.str("DD_API_KEY", default="")
DD_SITE = env.str("DD_SITE", default="datadoghq.com")
DD_API_URL = env.str("DD_API_URL", default="")
