"""Settings are imported in a fresh interpreter with a clean environment, as a server would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# The optional .env (written by `make run`) is ignored, so only the environment given counts.
SETUP = (
    "import environ; environ.Env.read_env = classmethod(lambda *a, **k: None); "
    "import django; django.setup(); "
    "from django.conf import settings; "
    "print(settings.DEBUG, settings.DATABASES['default']['ENGINE'])"
)


def start_django(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SETUP],
        cwd=ROOT,
        env={"DJANGO_SETTINGS_MODULE": "gatewaysite.settings", "PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_production_settings_without_secret_key_refuse_to_start() -> None:
    result = start_django()

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "DJANGO_SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_debug_off_with_the_dev_key_refuses_to_start() -> None:
    result = start_django(DJANGO_SECRET_KEY="insecure-dev-key-never-use-in-production")

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_settings_start_with_a_secret_key() -> None:
    result = start_django(DJANGO_SECRET_KEY="a-real-secret-for-this-test-only")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "django.db.backends.sqlite3"]


def test_debug_mode_starts_without_a_secret_key() -> None:
    result = start_django(DJANGO_DEBUG="true")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "True"


# --- production defaults (DEBUG off) ---------------------------------------------------------

SECRET = {"DJANGO_SECRET_KEY": "a-real-secret-for-this-test-only"}
READ = (
    "import environ, json; environ.Env.read_env = classmethod(lambda *a, **k: None); "
    "import django; django.setup(); "
    "from django.conf import settings; "
    "print(json.dumps({{name: getattr(settings, name) for name in {names!r}}}, default=str))"
)


def read_settings(*names: str, **env: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", READ.format(names=list(names))],
        cwd=ROOT,
        env={"DJANGO_SETTINGS_MODULE": "gatewaysite.settings", "PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    values: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return values


TRANSPORT = (
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_PROXY_SSL_HEADER",
)


def test_a_deployment_gets_secure_cookies_hsts_and_the_proxy_ssl_header() -> None:
    values = read_settings(*TRANSPORT, **SECRET, DJANGO_ALLOWED_HOSTS="gateway.example.com")

    assert values == {
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 365 * 24 * 3600,
        "SECURE_HSTS_PRELOAD": False,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
    }


def test_the_local_default_on_loopback_keeps_cookies_usable_over_plain_http() -> None:
    # `make run`: DEBUG off, plain http on 127.0.0.1; secure cookies would break the login.
    values = read_settings(*TRANSPORT, **SECRET)

    assert values["SESSION_COOKIE_SECURE"] is False
    assert values["CSRF_COOKIE_SECURE"] is False
    assert values["SECURE_HSTS_SECONDS"] == 0
    assert values["SECURE_PROXY_SSL_HEADER"] is None


def test_gateway_https_switches_the_transport_settings_either_way() -> None:
    off = read_settings(
        *TRANSPORT, **SECRET, DJANGO_ALLOWED_HOSTS="gateway.lan", GATEWAY_HTTPS="false"
    )
    on = read_settings(*TRANSPORT, **SECRET, GATEWAY_HTTPS="true")

    assert off["SESSION_COOKIE_SECURE"] is False and off["SECURE_HSTS_SECONDS"] == 0
    assert on["SESSION_COOKIE_SECURE"] is True and on["CSRF_COOKIE_SECURE"] is True


def test_postgresql_connections_get_connect_and_statement_timeouts() -> None:
    url = "postgres://gateway@127.0.0.1:5432/gateway"  # settings never connect

    default = read_settings("DATABASES", **SECRET, DATABASE_URL=url)
    custom = read_settings(
        "DATABASES",
        **SECRET,
        DATABASE_URL=url,
        GATEWAY_DB_CONNECT_TIMEOUT="2",
        GATEWAY_DB_STATEMENT_TIMEOUT_MS="0",
    )

    options = default["DATABASES"]["default"]["OPTIONS"]
    assert options["connect_timeout"] == 5
    assert options["options"] == "-c statement_timeout=60000"
    assert "pool" in options
    options = custom["DATABASES"]["default"]["OPTIONS"]
    assert options["connect_timeout"] == 2
    assert "options" not in options  # 0 turns the statement timeout off
