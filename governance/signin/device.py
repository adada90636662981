"""The verification page a developer's browser opens from Claude Code's /login (RFC 8628 3.3).

1. `GET <base>/device?user_code=…` shows the code to compare with the terminal (without one, a
   box to type it in); "This matches my device — continue" posts it, "Deny" ends the sign-in.
2. `POST <base>/device` (CSRF-protected, rate limited per address) finds the sign-in and sends
   the browser to the identity provider (code flow, PKCE S256, state and nonce in the session).
3. `GET <base>/oauth/callback` checks the state, exchanges the code and records who signed in,
   then `<base>/device/approve` shows the teams their groups map to, with the key each would be
   charged to; the developer picks one and approves (or denies).

The browser is bound to the sign-in by the session cookie (SameSite=Lax): the identity
provider's redirect brings it back, a page of another site cannot post to these forms.
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from governance.identity import oidc
from governance.models import DeviceGrant
from governance.services import signin
from governance.signin import idp, ratelimit
from governance.signin.routing import base_url, signin_enabled

logger = logging.getLogger(__name__)

SESSION_KEY = "claude_code_signin"
TEMPLATE = "claude_code/device.html"
NOT_RECOGNIZED = (
    "That code was not recognized — it may have expired. Check your device and try again."
)
EXPIRED = "This sign-in has expired or already ended. Start it again from Claude Code (/login)."
TOO_MANY = "Too many codes were entered from your network. Wait a few minutes and try again."


def _page(request: HttpRequest, step: str, status: int = 200, **context: Any) -> HttpResponse:
    response = render(request, TEMPLATE, {"step": step, "base": base_url(request), **context})
    response.status_code = status
    response["Content-Security-Policy"] = _content_security_policy()
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response


def _content_security_policy() -> str:
    # The form posts to this page, which redirects to the identity provider: browsers check
    # form-action along that redirect too.
    form_action = "'self'"
    try:
        endpoint = oidc.provider_metadata().authorization_endpoint
        parts = urllib.parse.urlsplit(endpoint)
        form_action += f" {parts.scheme}://{parts.netloc}"
    except oidc.DiscoveryError:
        pass
    return (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
        f"base-uri 'none'; form-action {form_action}"
    )


def _state(request: HttpRequest) -> dict[str, Any]:
    value = request.session.get(SESSION_KEY)
    return value if isinstance(value, dict) else {}


def _callback_url(request: HttpRequest) -> str:
    return f"{base_url(request)}/oauth/callback"


@require_http_methods(["GET", "POST"])
@signin_enabled
def device(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        code = request.GET.get("user_code", "").strip()
        return _page(request, "confirm" if code else "enter", user_code=code[:20])
    if ratelimit.exceeded(ratelimit.USER_CODE, str(request.META.get("REMOTE_ADDR") or "")):
        return _page(request, "enter", status=429, error=TOO_MANY)
    code = request.POST.get("user_code", "")
    grant = signin.pending_grant(code)
    if grant is None:
        return _page(request, "enter", status=400, error=NOT_RECOGNIZED, user_code=code[:20])
    try:
        authorization = idp.authorization(_callback_url(request))
    except oidc.DiscoveryError as error:
        logger.error("Claude Code sign-in: the identity provider is unavailable: %s", error)
        return _page(request, "error", status=503, error=f"Single sign-on is unavailable: {error}")
    request.session[SESSION_KEY] = {
        "grant": grant.pk,
        "state": authorization.state,
        "nonce": authorization.nonce,
        "verifier": authorization.code_verifier,
    }
    return HttpResponseRedirect(authorization.url)


@require_GET
@signin_enabled
def callback(request: HttpRequest) -> HttpResponse:
    state = _state(request)
    if not state.get("state") or request.GET.get("state") != state["state"]:
        return _page(request, "error", status=400, error=EXPIRED)
    grant = signin.live_grant(int(state["grant"]))
    request.session[SESSION_KEY] = {"grant": state["grant"]}  # the state is single-use
    if grant is None:
        return _page(request, "error", status=400, error=EXPIRED)
    if request.GET.get("error"):
        signin.deny(grant)
        return _page(request, "error", error="Your identity provider did not sign you in.")
    failure = _sign_in(request, grant, state)
    if failure is not None:
        return failure
    # To a page of its own, so that reloading it never replays the single-use code.
    return HttpResponseRedirect(f"{base_url(request)}/device/approve")


def _sign_in(
    request: HttpRequest, grant: DeviceGrant, state: dict[str, Any]
) -> HttpResponse | None:
    """Exchange the code and record who signed in; the error page when that fails."""
    try:
        signed_in = idp.exchange(
            code=request.GET.get("code", ""),
            redirect_uri=_callback_url(request),
            code_verifier=str(state["verifier"]),
            nonce=str(state["nonce"]),
        )
    except idp.IdpRefused as error:
        logger.warning("Claude Code sign-in refused: %s", error)
        signin.deny(grant)
        message = "Your identity provider's answer was refused."
        return _page(request, "error", status=400, error=message)
    except idp.IdpUnavailable as error:
        logger.error("Claude Code sign-in: the identity provider failed: %s", error)
        message = "Your identity provider could not be reached. Try again in a minute."
        return _page(request, "error", status=503, error=message)
    try:
        user = signin.record_sign_in(grant, signed_in)
    except signin.SignInRefused as refused:
        message = str(refused)
        return _page(request, "error", status=403, error=f"{message[:1].upper()}{message[1:]}.")
    request.session[SESSION_KEY] = {"grant": grant.pk, "signed_in": True, "user": user.pk}
    return None


def _signed_in_grant(request: HttpRequest) -> DeviceGrant | None:
    state = _state(request)
    if not state.get("signed_in"):
        return None
    grant = signin.live_grant(int(state["grant"]))
    # Only the browser that signed in as the grant's developer may approve it.
    if grant is None or grant.user_id is None or grant.user_id != state.get("user"):
        return None
    return grant


@require_http_methods(["GET", "POST"])
@signin_enabled
def approve(request: HttpRequest) -> HttpResponse:
    grant = _signed_in_grant(request)
    if grant is None or grant.user is None:
        return _page(request, "error", status=400, error=EXPIRED)
    if request.method == "GET":
        return _choose(request, grant)
    team = request.POST.get("team", "")
    if not team.isdigit():
        return _choose(request, grant, error="Choose a team.", status=400)
    try:
        key = signin.approve(grant, int(team))
    except signin.SignInRefused as error:
        return _choose(request, grant, error=str(error), status=400)
    request.session.pop(SESSION_KEY, None)
    grant.refresh_from_db()
    return _page(request, "done", team=grant.team, key=key, email=grant.email)


def _choose(
    request: HttpRequest, grant: DeviceGrant, *, error: str = "", status: int = 200
) -> HttpResponse:
    assert grant.user is not None
    choices = signin.team_choices(grant.user, grant.groups)
    ready = [choice for choice in choices if choice.ready]
    if not ready:
        signin.deny(grant)
        request.session.pop(SESSION_KEY, None)
        problems = [choice.problem for choice in choices] or [
            "Your groups at the identity provider map to no team of the gateway. Ask an "
            "administrator to add one of your groups to a team."
        ]
        return _page(request, "error", status=403, error=" ".join(problems))
    return _page(
        request,
        "choose",
        status=status,
        error=error,
        email=grant.email or grant.subject,
        choices=choices,
        # The team they signed in to before, else the first they may choose.
        selected=next((c for c in ready if c.existing), ready[0]).team.pk,
    )


@require_POST
@signin_enabled
def deny(request: HttpRequest) -> HttpResponse:
    """Deny from the first page (by its code) or after the sign-in (by the session)."""
    grant = _signed_in_grant(request) or signin.pending_grant(request.POST.get("user_code", ""))
    if grant is not None:
        signin.deny(grant)
    request.session.pop(SESSION_KEY, None)
    return _page(request, "denied")
