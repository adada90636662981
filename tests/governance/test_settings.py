"""Settings are imported in a fresh interpreter with a clean environment, as a server would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
