"""The access token a signed-in Claude Code sends to the gateway's own routes (managed
settings, telemetry ingest), checked as the proxy checks it on /v1/messages: the signature and
expiry (governance/signin_tokens.py), then the key it names must still be live (a revoked or
deprovisioned developer's token is refused at once)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from governance import policy, signin_tokens
from governance.policy import KeyPolicy

# Telemetry arrives every few seconds per developer: the key's liveness is re-read from the
# database at most this often per key and process (as the proxy's snapshots are).
CACHE_SECONDS = 30.0
MAX_CACHED = 10_000


@dataclass(frozen=True, slots=True)
class Developer:
    claims: signin_tokens.AccessClaims
    policy: KeyPolicy


def signing_key() -> bytes:
    return signin_tokens.signing_key(settings.GATEWAY_SIGNIN_KEY, settings.SECRET_KEY)


_cache: dict[str, tuple[float, KeyPolicy | None]] = {}
_lock = threading.Lock()


def _policy(lookup_hash: str, *, fresh: bool) -> KeyPolicy | None:
    now = time.monotonic()
    with _lock:
        cached = _cache.get(lookup_hash)
    if cached is not None and not fresh and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    loaded = policy.load_policy(lookup_hash)
    with _lock:
        if len(_cache) >= MAX_CACHED:
            _cache.clear()
        _cache[lookup_hash] = (now, loaded)
    return loaded


def forget() -> None:
    with _lock:
        _cache.clear()


def authenticate(request: HttpRequest, *, fresh: bool = False) -> Developer | None:
    """The signed-in developer, or None (no token, a bad or expired one, a withdrawn key).
    `fresh` reads the key from the database whatever the cache holds."""
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    claims = signin_tokens.verify(token.strip(), key=signing_key())
    if claims is None:
        return None
    found = _policy(claims.key_lookup_hash, fresh=fresh)
    if found is None or found.is_expired(dt.datetime.now(dt.UTC)):
        return None
    return Developer(claims=claims, policy=found)


def refused() -> JsonResponse:
    """401 in the Anthropic error shape; `x-should-retry: false` sends Claude Code to /login."""
    response = JsonResponse(
        {
            "type": "error",
            "error": {
                "type": "authentication_error",
                "message": "Your gateway session has expired or is not valid: sign in again "
                "with /login.",
            },
        },
        status=401,
    )
    response["x-should-retry"] = "false"
    response["Cache-Control"] = "no-store"
    return response
