"""The browser side of single sign-on: /sso/start/ sends the browser to the identity provider,
/sso/callback/ signs the user in from its answer, and the admin login page offers both ways in
("Sign in with SSO", and the password form kept for break-glass superusers).

With single sign-on off (GATEWAY_OIDC_ISSUER unset) both SSO views answer 404 and the login
page is Django's own.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import urlencode
from django.views.generic import View
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
)

from governance.identity import oidc
from governance.identity.backend import library_setting

logger = logging.getLogger(__name__)

FAILED = "Single sign-on failed: sign in again, or ask an administrator to check the gateway's log."


def _login_page(next_url: str = "") -> HttpResponseRedirect:
    url = reverse("admin:login")
    return HttpResponseRedirect(f"{url}?{urlencode({'next': next_url})}" if next_url else url)


class SSOStartView(OIDCAuthenticationRequestView):  # type: ignore[misc]
    """Redirect to the provider's authorization endpoint, with state, nonce and a PKCE S256
    challenge kept in the session (`?next=` is where the user lands afterwards)."""

    def __init__(self, **kwargs: Any) -> None:
        # The library reads the provider's endpoint here, before a view can answer; it is
        # read in get() instead, where an unreachable provider can be reported.
        View.__init__(self, **kwargs)

    @staticmethod
    def get_settings(attr: str, *args: Any) -> Any:
        return library_setting(attr, *args)

    def get(self, request: HttpRequest) -> HttpResponse:
        config = oidc.client_config()
        if config is None:
            raise Http404("single sign-on is off")
        try:
            metadata = oidc.provider_metadata()
        except oidc.DiscoveryError as error:
            logger.error("single sign-on is unavailable: %s", error)
            messages.error(request, f"Single sign-on is unavailable: {error}.")
            return _login_page(request.GET.get("next", ""))
        self.OIDC_OP_AUTH_ENDPOINT = metadata.authorization_endpoint
        self.OIDC_RP_CLIENT_ID = config.client_id
        response: HttpResponse = super().get(request)
        return response


class SSOCallbackView(OIDCAuthenticationCallbackView):  # type: ignore[misc]
    """Check the state against the session (an unknown state is refused with 400), exchange
    the code (client secret + PKCE verifier), sign the user in and send them on."""

    @staticmethod
    def get_settings(attr: str, *args: Any) -> Any:
        return library_setting(attr, *args)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not oidc.enabled():
            raise Http404("single sign-on is off")
        response: HttpResponse = super().get(request)
        return response

    def login_failure(self) -> HttpResponse:
        if self.request.GET.get("error"):
            # The provider's own refusal (access_denied, say); its description is its text.
            logger.warning(
                "single sign-on refused by the identity provider: %s",
                self.request.GET.get("error", "")[:100],
            )
        messages.error(self.request, FAILED)
        return _login_page()

    def login_success(self) -> HttpResponse:
        response: HttpResponse = super().login_success()
        # Roles come from the groups at sign-in: a bounded session makes a group removed at
        # the IdP take effect within this time, not only at the user's next sign-in.
        self.request.session.set_expiry(settings.GATEWAY_OIDC_SESSION_SECONDS)
        return response


def admin_login(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
    """The admin's login page, with "Sign in with SSO" above the password form when single
    sign-on is on (templates/admin/login.html)."""
    context = dict(extra_context or {})
    if oidc.enabled():
        context["sso_login_url"] = reverse("sso:start")
    return admin.site.login(request, extra_context=context)
