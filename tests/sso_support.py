"""Single sign-on in tests: the gateway configured against the local OIDC provider, and the
browser's steps driven by hand (the Django test client) or by httpx (a real gateway)."""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

import httpx

from governance.identity import oidc
from tests.fakes.oidc_provider import FakeOIDCProvider

CLIENT_ID = "claude-gateway"
CLIENT_SECRET = "client-secret-for-tests-0123456789"
PASSWORD_BACKEND = "django.contrib.auth.backends.ModelBackend"
SSO_BACKEND = "governance.identity.backend.GatewayOIDCBackend"


def turn_sso_on(settings: Any, idp: FakeOIDCProvider, *, gateway_url: str) -> None:
    """What the environment variables do, on pytest-django's `settings`: the gateway as a
    client of `idp`, whose callback is at `gateway_url`/sso/callback/."""
    settings.GATEWAY_OIDC_ISSUER = idp.issuer
    settings.GATEWAY_OIDC_CLIENT_ID = CLIENT_ID
    settings.GATEWAY_OIDC_CLIENT_SECRET = CLIENT_SECRET
    settings.AUTHENTICATION_BACKENDS = [PASSWORD_BACKEND, SSO_BACKEND]
    idp.add_client(CLIENT_ID, CLIENT_SECRET, [f"{gateway_url}/sso/callback/"])
    oidc.forget_metadata()


def query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def path_and_query(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def authorize(authorization_url: str) -> str:
    """The provider's answer to the browser: where it sends it back (the callback URL)."""
    response = httpx.get(authorization_url, follow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    return str(response.headers["location"])


def csrf_token(page: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert match, "no CSRF token in the page"
    return match.group(1)
