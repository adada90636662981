"""The access tokens the gateway mints for a developer signed in through Claude Code's /login.

Pure functions (no ORM): the hot path verifies a token on every request without a database
read. A token is a short-lived HS256 JWT naming the developer's gateway key by its lookup hash
(`kh`): the proxy verifies the signature and expiry, then finds the key's policy snapshot as it
does for a key presented directly, so revoking the key (or the developer's deprovisioning,
which revokes it) refuses the token at once, and every token expires within its lifetime
anyway. The developer's identity claims (`sub`, `email`, `groups`) are what Claude Code stamps
on its own telemetry.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
AUDIENCE = "claude-code"
# Fixed rather than the gateway's URL: a token minted through one host name (the load balancer)
# must verify on a request that arrives under another (a replica's own address).
ISSUER = "claude-gateway"
DEFAULT_TTL = dt.timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    key_lookup_hash: str
    subject: str
    email: str
    groups: tuple[str, ...]
    expires_at: dt.datetime


def signing_key(configured: str, secret_key: str) -> bytes:
    """GATEWAY_SIGNIN_KEY when set, else derived from SECRET_KEY with its own label."""
    if configured:
        return configured.encode()
    return hashlib.sha256(b"gateway-signin-tokens:" + secret_key.encode()).digest()


def mint(
    *,
    key_lookup_hash: str,
    subject: str,
    email: str,
    groups: tuple[str, ...],
    key: bytes,
    now: dt.datetime,
    ttl: dt.timedelta = DEFAULT_TTL,
    issuer: str = ISSUER,
) -> str:
    claims = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": subject,
        "email": email,
        "groups": list(groups),
        "kh": key_lookup_hash,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "jti": base64.urlsafe_b64encode(secrets.token_bytes(12)).decode().rstrip("="),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify(token: str, *, key: bytes, issuer: str = ISSUER) -> AccessClaims | None:
    """The claims of a valid, unexpired token the gateway minted; None for anything else."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=issuer,
            options={"require": ["exp", "iat", "sub", "kh"]},
        )
    except jwt.PyJWTError:
        return None
    lookup = claims.get("kh")
    if not isinstance(lookup, str) or len(lookup) != 64:
        return None
    groups = claims.get("groups")
    return AccessClaims(
        key_lookup_hash=lookup,
        subject=str(claims["sub"]),
        email=str(claims.get("email", "")),
        groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
        expires_at=dt.datetime.fromtimestamp(int(claims["exp"]), tz=dt.UTC),
    )


def looks_like_jwt(token: str) -> bool:
    return token.startswith("eyJ") and token.count(".") == 2
