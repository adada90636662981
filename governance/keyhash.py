"""How a virtual key's secret looks and how it is looked up: pure functions, no ORM.

The hot path (proxy/) hashes every presented secret with this module and nothing else from
governance's write side, so it lives apart from governance.services.
"""

from __future__ import annotations

import hashlib

SECRET_PREFIX = "sk-gw-"  # noqa: S105 (a format marker, not a secret)


def hash_secret(secret: str) -> str:
    """SHA-256 is enough: secrets carry 256 random bits, so there is nothing to brute-force."""
    return hashlib.sha256(secret.encode()).hexdigest()
