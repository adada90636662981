"""Settings for the gateway.

With nothing set in the environment the gateway runs on the embedded default: SQLite, a
local-memory cache, in-process counters and background work run in process. Production sets
DATABASE_URL (PostgreSQL), REDIS_URL, CELERY_BROKER_URL, DJANGO_SECRET_KEY and
GATEWAY_ENCRYPTION_KEY.
"""

from __future__ import annotations

import ipaddress
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
# HMAC key of the audit chain (governance/services/audit.py), at least 32 characters. Kept out of
# the database so that whoever can write the database cannot re-hash edited events. When it is
# not set it is derived from SECRET_KEY; production should set it, and keep it: events hashed
# with another key no longer verify.
GATEWAY_AUDIT_KEY = env.str("GATEWAY_AUDIT_KEY", default="")
# Append-only file the audit chain's head is exported to on a schedule (also logged at INFO).
GATEWAY_AUDIT_ANCHOR_FILE = env.str(
    "GATEWAY_AUDIT_ANCHOR_FILE", default=str(BASE_DIR / "var" / "audit-anchors.jsonl")
)

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])


def _loopback_only(hosts: list[str]) -> bool:
    """Whether every allowed host name is this machine's own: then the admin is reachable over
    loopback only, which is the plain-http embedded default (`make run`), not a deployment."""

    def loopback(host: str) -> bool:
        name = host.strip("[]").lower()
        try:
            return name == "localhost" or ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    return bool(hosts) and all(map(loopback, hosts))


# Served over HTTPS (usually TLS ends at a reverse proxy that sets X-Forwarded-Proto): cookies
# are sent over HTTPS only and browsers are told to stay on HTTPS (HSTS). On by default when
# DEBUG is off, except when the admin answers to loopback names only: `make run` serves plain
# http on 127.0.0.1, where secure cookies would make the admin login impossible.
GATEWAY_HTTPS = env.bool("GATEWAY_HTTPS", default=not DEBUG and not _loopback_only(ALLOWED_HOSTS))
SESSION_COOKIE_SECURE = GATEWAY_HTTPS
CSRF_COOKIE_SECURE = GATEWAY_HTTPS
# HSTS is sent on HTTPS responses only; one year, and no preload unless asked for (preload
# lists are hard to leave).
SECURE_HSTS_SECONDS = (
    env.int("GATEWAY_HSTS_SECONDS", default=365 * 24 * 3600) if GATEWAY_HTTPS else 0
)
SECURE_HSTS_PRELOAD = GATEWAY_HTTPS and env.bool("GATEWAY_HSTS_PRELOAD", default=False)
# The TLS-terminating proxy in front says the original request was HTTPS. Only with
# GATEWAY_HTTPS: a gateway answering plain http directly must not trust a client's header.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if GATEWAY_HTTPS else None

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc served locally (no CDN) at /api/docs/
    "django_filters",  # the REST API's filters (and their form in the browsable API)
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
        options = config.setdefault("OPTIONS", {})
        if env.bool("DATABASE_POOL", default=True):
            options["pool"] = {"min_size": 1, "max_size": 10}
        options.update(_postgresql_timeouts())
    elif config["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets the admin read while the ledger writer writes.
        config.setdefault("OPTIONS", {})["init_command"] = "PRAGMA journal_mode=WAL;"
        config["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    return config


def _postgresql_timeouts() -> dict[str, Any]:
    """A database that does not answer fails a request or a job in seconds instead of holding
    it (and its pooled connection) forever. 0 turns either off."""
    timeouts: dict[str, Any] = {}
    connect = env.int("GATEWAY_DB_CONNECT_TIMEOUT", default=5)
    if connect > 0:
        timeouts["connect_timeout"] = connect
    statement_ms = env.int("GATEWAY_DB_STATEMENT_TIMEOUT_MS", default=60_000)
    if statement_ms > 0:
        timeouts["options"] = f"-c statement_timeout={statement_ms}"
    return timeouts


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
            # An unreachable Redis must fail fast: the policy-version bump after a commit (and
            # so an admin save) would otherwise hang on it; the outbox retries the bump.
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
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

# --- single sign-on (governance/identity/) ------------------------------------------------
# OpenID Connect for the admin and the dashboards, on when GATEWAY_OIDC_ISSUER is set: the
# provider's endpoints come from {issuer}/.well-known/openid-configuration, read at the first
# sign-in. The password login stays, for break-glass superusers. The callback URL to register
# at the provider is <gateway URL>/sso/callback/.
GATEWAY_OIDC_ISSUER = env.str("GATEWAY_OIDC_ISSUER", default="")
GATEWAY_OIDC_CLIENT_ID = env.str("GATEWAY_OIDC_CLIENT_ID", default="")
GATEWAY_OIDC_CLIENT_SECRET = env.str("GATEWAY_OIDC_CLIENT_SECRET", default="")
GATEWAY_OIDC_SCOPES = env.str("GATEWAY_OIDC_SCOPES", default="openid email profile groups")
# The claim (of the ID token or the userinfo) that lists the user's groups; a dotted name
# reads a nested one (Keycloak's realm_access.roles).
GATEWAY_OIDC_GROUPS_CLAIM = env.str("GATEWAY_OIDC_GROUPS_CLAIM", default="groups")
GATEWAY_OIDC_TIMEOUT_SECONDS = env.float("GATEWAY_OIDC_TIMEOUT_SECONDS", default=10.0)
# Roles are read from the groups at sign-in: a single sign-on session ends after this long,
# so a group removed at the provider takes effect within it.
GATEWAY_OIDC_SESSION_SECONDS = env.int("GATEWAY_OIDC_SESSION_SECONDS", default=8 * 3600)
SSO_BACKEND = "governance.identity.backend.GatewayOIDCBackend"
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
if GATEWAY_OIDC_ISSUER:
    if not GATEWAY_OIDC_ISSUER.startswith(("https://", "http://")):
        raise ImproperlyConfigured("GATEWAY_OIDC_ISSUER must be the provider's http(s) URL.")
    if not (GATEWAY_OIDC_CLIENT_ID and GATEWAY_OIDC_CLIENT_SECRET):
        raise ImproperlyConfigured(
            "GATEWAY_OIDC_ISSUER is set: set GATEWAY_OIDC_CLIENT_ID and GATEWAY_OIDC_CLIENT_SECRET "
            "too (the client registered at the identity provider)."
        )
    if "openid" not in GATEWAY_OIDC_SCOPES.split():
        raise ImproperlyConfigured("GATEWAY_OIDC_SCOPES must include openid.")
    AUTHENTICATION_BACKENDS.append(SSO_BACKEND)

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

# The REST API (governance/api/, README "REST API"): API tokens (Bearer) or a staff session,
# and a gateway role for everything; cursor pagination; service errors as 400 / 409.
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "governance.api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["governance.api.permissions.HasGatewayRole"],
    "DEFAULT_PAGINATION_CLASS": "governance.api.pagination.GatewayCursorPagination",
    "EXCEPTION_HANDLER": "governance.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Claude gateway API",
    "VERSION": "1",
    "DESCRIPTION": (
        "Governance objects for automation. Authenticate with `Authorization: Bearer <API "
        "token>`; every call needs a gateway role. See the README's REST API section."
    ),
    # The schema maps the whole API: staff sessions and API tokens of users with a role.
    "SERVE_PERMISSIONS": ["governance.api.permissions.CanReadSchema"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Choice sets sharing a field name ("kind") get names of their own in the schema.
    "ENUM_NAME_OVERRIDES": {
        "ProviderKindEnum": "governance.models.Provider.Kind",
        "AlertChannelKindEnum": "telemetry.models.AlertChannel.Kind",
        "AlertKindEnum": "telemetry.models.AlertEvent.Kind",
    },
}

# How long a gateway process may serve a policy snapshot before re-checking the shared version.
GATEWAY_POLICY_CHECK_SECONDS = env.float("GATEWAY_POLICY_CHECK_SECONDS", default=1.0)
# Every cached key policy, routing table and price book is reloaded after this long even if
# the version did not move: it bounds how long a revoked key stays live while Redis is down.
GATEWAY_SNAPSHOT_MAX_AGE_SECONDS = env.float("GATEWAY_SNAPSHOT_MAX_AGE_SECONDS", default=60.0)
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
# Failover: at most this many deployments per request, and none started after this many
# seconds (a slow primary must not make the client wait for every fallback in turn).
GATEWAY_MAX_ATTEMPTS = env.int("GATEWAY_MAX_ATTEMPTS", default=4)
GATEWAY_FAILOVER_SECONDS = env.float("GATEWAY_FAILOVER_SECONDS", default=90.0)
# max_tokens of an OpenAI-API request that names none (Anthropic requires one).
GATEWAY_OPENAI_DEFAULT_MAX_TOKENS = env.int("GATEWAY_OPENAI_DEFAULT_MAX_TOKENS", default=4096)
# Claude Code's /login through the gateway: the base path of the sign-in protocol and of the
# routes a signed-in session calls, and the key its access tokens are signed with (default:
# derived from DJANGO_SECRET_KEY; governance/signin_tokens.py).
GATEWAY_SIGNIN_PATH = "/" + env.str("GATEWAY_SIGNIN_PATH", default="/claude-code").strip("/")
GATEWAY_SIGNIN_KEY = env.str("GATEWAY_SIGNIN_KEY", default="")
if GATEWAY_SIGNIN_KEY and len(GATEWAY_SIGNIN_KEY) < 32:
    raise ImproperlyConfigured("GATEWAY_SIGNIN_KEY must be at least 32 characters (HS256 key).")
GATEWAY_SIGNIN_TOKEN_MINUTES = env.int("GATEWAY_SIGNIN_TOKEN_MINUTES", default=10)
# Scopes the Claude Code sign-in asks the identity provider for (governance/signin/); empty:
# GATEWAY_OIDC_SCOPES plus offline_access, so that every refresh re-reads the developer's groups.
GATEWAY_SIGNIN_SCOPES = env.str("GATEWAY_SIGNIN_SCOPES", default="")
# Output tokens reserved per request at admission (see proxy/admission.py for the bound).
GATEWAY_RESERVE_OUTPUT_TOKENS = env.int("GATEWAY_RESERVE_OUTPUT_TOKENS", default=4096)
# Reserve the full max_tokens instead: budgets then never overshoot, at the price of refusing
# earlier as a budget nears its end.
GATEWAY_STRICT_BUDGETS = env.bool("GATEWAY_STRICT_BUDGETS", default=False)
# A request's budget reservation and concurrency slot expire this long after admission unless
# settled first: what a worker that dies mid-request leaks, at most. Keep it above the longest
# request (streams included).
GATEWAY_RESERVATION_TTL_SECONDS = env.int("GATEWAY_RESERVATION_TTL_SECONDS", default=3600)
GATEWAY_AUTH_FAILURES_PER_MINUTE = env.int("GATEWAY_AUTH_FAILURES_PER_MINUTE", default=30)
# One bad key (a revoked key left in a script) is throttled on its own past this many failures.
GATEWAY_AUTH_FAILURES_PER_KEY_PER_MINUTE = env.int(
    "GATEWAY_AUTH_FAILURES_PER_KEY_PER_MINUTE", default=10
)
# Request-body bytes one worker holds at once; past it new requests get 503 (memory bound).
GATEWAY_MAX_INFLIGHT_BODY_BYTES = env.int(
    "GATEWAY_MAX_INFLIGHT_BODY_BYTES", default=256 * 1024 * 1024
)
# Usage events the ledger could not take (database down) wait here and are replayed.
GATEWAY_SPOOL_DIR = env.str("GATEWAY_SPOOL_DIR", default=str(BASE_DIR / "var" / "spool"))
GATEWAY_SPOOL_REPLAY_SECONDS = env.float("GATEWAY_SPOOL_REPLAY_SECONDS", default=5.0)
# Usage events held in memory per worker while the ledger is slow; past this many, new events
# go straight to the spool (proxy/usage.py), never dropped.
GATEWAY_USAGE_QUEUE_MAX = env.int("GATEWAY_USAGE_QUEUE_MAX", default=20_000)
# At SIGTERM the server stops accepting and gives requests in flight (Claude Code streams run
# for minutes) this long to finish; then it cancels the rest, writes pending usage to the ledger
# and exits. The servers take it from here or from the same variable: gatewaysite/workers.py,
# docker/entrypoint.sh (gunicorn) and the Makefile (uvicorn). README "Deploying".
GATEWAY_DRAIN_SECONDS = env.int("GATEWAY_DRAIN_SECONDS", default=600)
# Failover breaker per deployment (proxy/health/): this many failed attempts in a row (no
# answer, 408, 429, 5xx, 529), or one with retry-after, cool a deployment down: requests skip
# it for GATEWAY_COOLDOWN_SECONDS, doubled at each trip in a row up to the max, then one
# request probes it. Shared through Redis when REDIS_URL is set.
GATEWAY_COOLDOWN_FAILURES = env.int("GATEWAY_COOLDOWN_FAILURES", default=3)
GATEWAY_COOLDOWN_SECONDS = env.float("GATEWAY_COOLDOWN_SECONDS", default=30.0)
GATEWAY_COOLDOWN_MAX_SECONDS = env.float("GATEWAY_COOLDOWN_MAX_SECONDS", default=300.0)


def _trusted_proxies() -> list[str]:
    """Addresses or networks (comma-separated) whose X-Forwarded-For is believed; empty: none.

    Checked as strictly as gunicorn checks the same list (--forwarded-allow-ips), so a value
    that starts the gateway also starts its server.
    """
    entries = [entry.strip() for entry in env.str("GATEWAY_TRUSTED_PROXIES", default="").split(",")]
    for entry in filter(None, entries):
        try:
            ipaddress.ip_network(entry)
        except ValueError as error:
            raise ImproperlyConfigured(f"GATEWAY_TRUSTED_PROXIES: {error}") from None
    return [entry for entry in entries if entry]


# The load balancers or reverse proxies in front of the gateway: only a request from one of
# them has its client address taken from X-Forwarded-For (the proxy, uvicorn and gunicorn
# all use this list). Empty, the default: forwarded headers are ignored, the peer is the client.
GATEWAY_TRUSTED_PROXIES = _trusted_proxies()

# --- outbound requests (governance/outbound.py) --------------------------------------------
# Provider base URLs and alert webhooks may not point at loopback, private, link-local (cloud
# metadata) or other non-public addresses; these networks (comma-separated CIDRs, e.g.
# 10.20.0.0/16 for a self-hosted model server) are allowed anyway.
GATEWAY_OUTBOUND_ALLOWED_NETWORKS = env.list("GATEWAY_OUTBOUND_ALLOWED_NETWORKS", default=[])

# --- MCP servers ------------------------------------------------------------------------------
# A stdio MCP server is a command the gateway launches on its own hosts with its own rights.
# Off, none can be saved and none already saved is launched (tool calls to it fail cleanly).
GATEWAY_MCP_STDIO = env.bool("GATEWAY_MCP_STDIO", default=True)

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
