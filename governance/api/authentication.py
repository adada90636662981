"""Who is calling: an API token (`Authorization: Bearer gwapi-…`) or a staff session.

Its OpenAPI security scheme is in governance/api/schema.py: drf-spectacular imported here
would import DRF's views while DRF is still reading this module from its settings.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from governance.models import ApiToken
from governance.services import tokens

SCHEME = "Bearer"


class ApiTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <API token>`. The token row is read on every request, so a
    revoked or expired token is refused at once (no cache to wait out)."""

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, ApiToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != SCHEME.lower().encode():
            return None  # no token: let the session (or nothing) authenticate
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Authorization: Bearer <API token>")
        try:
            secret = parts[1].decode()
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("invalid API token") from exc
        token = tokens.authenticate(secret)
        if token is None:
            # Neither the token nor why it failed (unknown, revoked, expired) is echoed.
            raise exceptions.AuthenticationFailed("invalid, revoked or expired API token")
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        # Makes unauthenticated requests answer 401 with a challenge, not 403.
        return f'{SCHEME} realm="api"'
