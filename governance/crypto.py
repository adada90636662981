"""Encryption at rest for provider and MCP credentials (Fernet: AES-128-CBC + HMAC-SHA256)."""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@cache
def _fernet(key: str, secret_key: str) -> Fernet:
    if key:
        try:
            return Fernet(key.encode())
        except ValueError as exc:
            raise ImproperlyConfigured(
                "GATEWAY_ENCRYPTION_KEY must be a Fernet key: python -c "
                '"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
            ) from exc
    derived = hashlib.sha256(b"gateway-credentials:" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def fernet() -> Fernet:
    return _fernet(settings.GATEWAY_ENCRYPTION_KEY, settings.SECRET_KEY)


def encrypt_credentials(credentials: dict[str, str]) -> str:
    if not credentials:
        return ""
    payload = json.dumps(credentials, sort_keys=True).encode()
    return fernet().encrypt(payload).decode()


def decrypt_credentials(token: str) -> dict[str, str]:
    if not token:
        return {}
    try:
        data: dict[str, str] = json.loads(fernet().decrypt(token.encode()))
    except InvalidToken as exc:
        raise ImproperlyConfigured(
            "Stored credentials cannot be decrypted: GATEWAY_ENCRYPTION_KEY changed?"
        ) from exc
    return data
