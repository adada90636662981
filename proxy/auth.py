"""Who is calling: the virtual key from the headers, checked before any body is read."""

from __future__ import annotations

import datetime as dt
import logging
import time

from governance import signin_tokens
from governance.keyhash import SECRET_PREFIX, hash_secret
from governance.policy import KeyPolicy
from proxy import subscription
from proxy.asgi import Incoming
from proxy.errors import GatewayError
from proxy.records import attribute_request, new_event, record_refusal
from proxy.runtime import Runtime

logger = logging.getLogger("gateway.proxy")


def presented_secret(headers: dict[str, str]) -> str:
    """The virtual key from `x-api-key` or `Authorization: Bearer`.

    When both are present and differ, x-api-key wins, unless only the Bearer value looks like
    a gateway key (Claude Code sends both when ANTHROPIC_API_KEY and ANTHROPIC_AUTH_TOKEN are
    both set, and the API key may be a stale provider key).
    """
    gateway_key = headers.get(subscription.GATEWAY_KEY_HEADER, "").strip()
    if gateway_key:  # a Claude-subscription client names its virtual key here
        return gateway_key
    api_key = headers.get("x-api-key", "").strip()
    authorization = headers.get("authorization", "")
    bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
    if bearer.startswith(subscription.OAUTH_TOKEN_PREFIX):
        bearer = ""  # a Claude subscription's token is never a virtual key
    bearer_is_ours = bearer.startswith(SECRET_PREFIX) and not api_key.startswith(SECRET_PREFIX)
    if api_key and bearer and api_key != bearer and bearer_is_ours:
        return bearer
    return api_key or bearer


def _session_expired(message: str) -> GatewayError:
    # x-should-retry: false sends Claude Code back to /login instead of retrying.
    return GatewayError(
        401,
        "authentication_error",
        f"{message}: sign in again with /login.",
        headers=[(b"x-should-retry", b"false")],
    )


def session_key_hash(runtime: Runtime, headers: dict[str, str]) -> str:
    """The lookup hash of the developer key a signed-in session's access token names."""
    authorization = headers.get("authorization", "")
    token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
    if not token:
        raise _session_expired("No gateway session")
    claims = signin_tokens.verify(token, key=runtime.signin_key)
    if claims is None:
        raise _session_expired("Your gateway session has expired or is not valid")
    return claims.key_lookup_hash


async def authenticate(runtime: Runtime, request: Incoming) -> KeyPolicy:
    """The key's policy, from the headers alone: nothing of the body is read before this.

    On the routes of a signed-in Claude Code session (GATEWAY_SIGNIN_PATH) the bearer is an
    access token the gateway minted, naming the developer's key; elsewhere, the key itself.
    """
    session = runtime.signin_routes(request.path)
    if session:
        lookup_hash = session_key_hash(runtime, request.headers)
    else:
        lookup_hash = _presented_key_hash(request)
    guard = runtime.auth_guard
    address = request.client_address
    if runtime.snapshots.cached_key(lookup_hash) is None and guard.blocked(address, lookup_hash):
        raise GatewayError(
            429,
            "rate_limit_error",
            "Too many failed authentications from this address or with this key; "
            "retry in a minute.",
            headers=[(b"retry-after", b"60")],
            recorded=False,
        )
    try:
        policy = await runtime.snapshots.key_policy(lookup_hash)
    except Exception as exc:
        # A key not yet cached needs the database; while it is unreachable the gateway cannot
        # tell a good key from a revoked one, so it refuses (Claude Code retries a 503).
        logger.warning("could not load a key's policy: %s", type(exc).__name__)
        raise GatewayError(
            503,
            "api_error",
            "The gateway cannot check this key right now (its database is unreachable). "
            "Retry shortly.",
            headers=[(b"retry-after", b"5")],
        ) from exc
    if policy is None and session:  # the developer was deprovisioned, or the key revoked
        raise _session_expired("Your gateway access has been withdrawn")
    if policy is None:
        guard.record_failure(address, lookup_hash)
        raise GatewayError(401, "authentication_error", "Invalid virtual key (unknown or revoked).")
    if policy.is_expired(dt.datetime.now(dt.UTC)):
        guard.record_failure(address, lookup_hash)
        raise GatewayError(
            401, "authentication_error", f'Virtual key "{policy.key_name}" has expired.'
        )
    return policy


def _presented_key_hash(request: Incoming) -> str:
    secret = presented_secret(request.headers)
    if not secret and subscription.subscription_token(request.headers):
        raise subscription.missing_gateway_key()
    if not secret:
        raise GatewayError(
            401,
            "authentication_error",
            "No virtual key: send it in x-api-key or Authorization: Bearer.",
        )
    return hash_secret(secret)


async def authenticate_recorded(runtime: Runtime, request: Incoming, route: str) -> KeyPolicy:
    """authenticate(), with a ledger row when it refuses."""
    started = time.perf_counter()
    try:
        return await authenticate(runtime, request)
    except GatewayError as refusal:
        event = new_event(request, route)
        attribute_request(event, request.headers, None)
        record_refusal(runtime, event, refusal, None, started=started)
        raise
