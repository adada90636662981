"""The secrets of the sign-in and their formats; only their SHA-256 is ever stored.

- device code: 32 random bytes, base64url (the polling client's secret);
- user code: 8 letters of RFC 8628's base-20 alphabet shown `XXXX-XXXX` (20^8 ≈ 2.6e10;
  matched ignoring case and separators, and guessed at no faster than the /device limit);
- refresh token: `gwr_` + the session's public id (32 hex) + 32 random bytes base64url. The
  id names the session even when the secret is an old one, which is how a replayed refresh
  token is recognised and its session revoked.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
REFRESH_PREFIX = "gwr_"
SESSION_ID_LENGTH = 32


def digest(secret: str) -> str:
    """Enough for 256-bit secrets; user codes are short-lived and rate limited."""
    return hashlib.sha256(secret.encode()).hexdigest()


def device_code() -> str:
    return secrets.token_urlsafe(32)


def user_code() -> str:
    letters = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
    return f"{letters[:4]}-{letters[4:]}"


def normalize_user_code(text: str) -> str:
    """`yqhb fcmq`, `YQHB-FCMQ` and `yqhbfcmq` are one code; "" when it cannot be one."""
    letters = "".join(ch for ch in text.upper() if ch.isalnum())
    if len(letters) != USER_CODE_LENGTH or any(ch not in USER_CODE_ALPHABET for ch in letters):
        return ""
    return letters


def user_code_digest(text: str) -> str:
    normalized = normalize_user_code(text)
    return digest(normalized) if normalized else ""


def session_id() -> str:
    return secrets.token_hex(SESSION_ID_LENGTH // 2)


@dataclass(frozen=True, slots=True)
class RefreshToken:
    session_id: str
    secret: str

    def __str__(self) -> str:
        return f"{REFRESH_PREFIX}{self.session_id}{self.secret}"

    def __repr__(self) -> str:  # never the secret in a traceback
        return f"RefreshToken(session_id={self.session_id!r})"

    @property
    def digest(self) -> str:
        return digest(str(self))


def new_refresh_token(session: str) -> RefreshToken:
    return RefreshToken(session_id=session, secret=secrets.token_urlsafe(32))


def parse_refresh_token(text: str) -> RefreshToken | None:
    if not text.startswith(REFRESH_PREFIX) or len(text) > 200:
        return None
    body = text[len(REFRESH_PREFIX) :]
    session, secret = body[:SESSION_ID_LENGTH], body[SESSION_ID_LENGTH:]
    if len(session) != SESSION_ID_LENGTH or not secret:
        return None
    try:
        int(session, 16)
    except ValueError:
        return None
    return RefreshToken(session_id=session.lower(), secret=secret)
