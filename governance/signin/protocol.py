"""The JSON endpoints Claude Code's /login calls (CLAUDE-GATEWAY.md §1.4-1.9, Part 2 §1-2):
discovery, device authorization, the token endpoint and revocation.

Claude Code sends forms with no client_id: the gateway is the only client. Errors are RFC 6749
JSON (`{"error": …, "error_description": …}`) with `Cache-Control: no-store`; `slow_down` is
429 as on Anthropic's gateway, and Claude Code adds 5 s to its interval on it. A database or
identity provider that cannot answer gives 503 `temporarily_unavailable`, on which Claude Code
keeps its token and retries later; every other refusal of a refresh is `invalid_grant`, on
which it asks the developer to sign in again.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from governance.services import signin
from governance.signin import ratelimit
from governance.signin.routing import base_url, signin_enabled

logger = logging.getLogger(__name__)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
PROTOCOL_VERSION = 1


def _json(body: dict[str, Any], status: int = 200) -> JsonResponse:
    response = JsonResponse(body, status=status)
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


def oauth_error(error: str, description: str = "", status: int = 400) -> JsonResponse:
    body = {"error": error, **({"error_description": description} if description else {})}
    return _json(body, status)


def _limited(limit: ratelimit.Limit, request: HttpRequest) -> JsonResponse | None:
    if not ratelimit.exceeded(limit, str(request.META.get("REMOTE_ADDR") or "")):
        return None
    response = oauth_error(
        "slow_down",
        "Too many sign-in attempts came from your network, which other people may share.",
        status=429,
    )
    response["Retry-After"] = str(ratelimit.retry_after(limit))
    return response


@require_GET
@signin_enabled
def discovery(request: HttpRequest) -> JsonResponse:
    """RFC 8414 metadata, at `<base>/.well-known/oauth-authorization-server` (the path is
    appended to the base, as Claude Code asks for it); every endpoint on the same origin."""
    issuer = base_url(request)
    return _json(
        {
            "issuer": issuer,
            "device_authorization_endpoint": f"{issuer}/oauth/device_authorization",
            "token_endpoint": f"{issuer}/oauth/token",
            "revocation_endpoint": f"{issuer}/oauth/revoke",
            "grant_types_supported": [DEVICE_GRANT, "refresh_token"],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["openid", "profile", "email"],
            "gateway_protocol_version": PROTOCOL_VERSION,
        }
    )


@csrf_exempt
@require_POST
@signin_enabled
def device_authorization(request: HttpRequest) -> JsonResponse:
    """RFC 8628 3.1-3.2; a form with only `surface=claude_code` (other fields are ignored)."""
    limited = _limited(ratelimit.DEVICE_AUTHORIZATION, request)
    if limited is not None:
        return limited
    try:
        started = signin.start_device_grant()
    except DatabaseError:
        logger.exception("device authorization failed: the database is unavailable")
        return oauth_error("temporarily_unavailable", "try again in a minute", status=503)
    verification = f"{base_url(request)}/device"
    return _json(
        {
            "device_code": started.device_code,
            "user_code": started.user_code,
            "verification_uri": verification,
            "verification_uri_complete": f"{verification}?user_code={started.user_code}",
            "expires_in": started.expires_in,
            "interval": started.interval,
        }
    )


@csrf_exempt
@require_POST
@signin_enabled
def token(request: HttpRequest) -> JsonResponse:
    """The device-code grant (RFC 8628 3.4-3.5) and the refresh grant (RFC 6749 6)."""
    limited = _limited(ratelimit.TOKEN, request)
    if limited is not None:
        return limited
    try:
        tokens = _grant(request)
    except signin.TokenError as error:
        return oauth_error(error.error, error.description, error.status)
    except DatabaseError:
        logger.exception("token request failed: the database is unavailable")
        return oauth_error("temporarily_unavailable", "try again in a minute", status=503)
    return _json(
        {
            "access_token": tokens.access_token,
            "token_type": "Bearer",
            "expires_in": tokens.expires_in,
            "refresh_token": tokens.refresh_token,
        }
    )


def _grant(request: HttpRequest) -> signin.Tokens:
    grant_type = request.POST.get("grant_type", "")
    client = str(request.headers.get("User-Agent", ""))
    if grant_type == DEVICE_GRANT:
        device_code = request.POST.get("device_code", "")
        if not device_code:
            raise signin.TokenError("invalid_request", "device_code is required")
        return signin.redeem_device_code(device_code, client=client)
    if grant_type == "refresh_token":
        refresh_token = request.POST.get("refresh_token", "")
        if not refresh_token:
            raise signin.TokenError("invalid_request", "refresh_token is required")
        return signin.refresh(refresh_token, client=client)
    raise signin.TokenError("unsupported_grant_type")


@csrf_exempt
@require_POST
@signin_enabled
def revoke(request: HttpRequest) -> HttpResponse:
    """RFC 7009: 200 whatever the token (Claude Code's /logout is best effort)."""
    limited = _limited(ratelimit.REVOKE, request)
    if limited is not None:
        return limited
    try:
        signin.revoke(request.POST.get("token", ""))
    except DatabaseError:
        logger.exception("revocation failed: the database is unavailable")
        return oauth_error("temporarily_unavailable", "try again in a minute", status=503)
    return _json({})
