"""Test settings: the normal settings with a throwaway secret and fast password hashing."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-not-for-production")

from gatewaysite.settings import *  # noqa: F403
from gatewaysite.settings import BASE_DIR, DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# var/ is not in git: a fresh clone has to make it for the test database and version file.
(BASE_DIR / "var").mkdir(exist_ok=True)
# End-to-end tests start gateways; their background jobs would race the tests' own data.
GATEWAY_IN_PROCESS_JOBS = False
# The fake upstreams and webhook receivers listen on loopback; tests of the outbound guard
# override this with an empty list.
GATEWAY_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]
# Per test process, like the test database below.
GATEWAY_POLICY_VERSION_FILE = str(BASE_DIR / "var" / f"policy-version-{os.getpid()}")

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not shared-cache memory: the end-to-end tests write from the gateway's threads
    # too, and shared-cache SQLite answers concurrent writers with "table is locked" at once
    # instead of waiting for the lock.
    # One file per test process, so parallel runs in one checkout never share it.
    DATABASES["default"]["TEST"] = {
        "NAME": str(BASE_DIR / "var" / f"test-gateway-{os.getpid()}.sqlite3")
    }
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30
