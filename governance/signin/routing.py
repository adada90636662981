"""Where the sign-in lives: its base URL as the client reached it, and the switch that hides it
all when single sign-on is off."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.conf import settings
from django.http import Http404, HttpRequest

from governance.identity import oidc

P = ParamSpec("P")
R = TypeVar("R")


def base_url(request: HttpRequest) -> str:
    """`<scheme>://<host><GATEWAY_SIGNIN_PATH>`, the URL managed settings name
    (forceLoginGatewayUrl) and the discovery document's issuer. The host is the one the client
    used (checked against DJANGO_ALLOWED_HOSTS); behind TLS termination the scheme comes from
    X-Forwarded-Proto when GATEWAY_HTTPS is on."""
    return request.build_absolute_uri(settings.GATEWAY_SIGNIN_PATH).rstrip("/")


def signin_enabled(view: Callable[P, R]) -> Callable[P, R]:
    """404 for every sign-in route while single sign-on is off (GATEWAY_OIDC_ISSUER unset)."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if not oidc.enabled():
            raise Http404("Claude Code sign-in needs single sign-on (GATEWAY_OIDC_ISSUER)")
        return view(*args, **kwargs)

    return wrapper
