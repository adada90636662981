"""Who may use the API at all; what each object allows is governance.access's answer."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from governance.access import Access


def _signed_in(request: Request) -> bool:
    return bool(request.user and request.user.is_authenticated)


def _by_session(request: Request) -> bool:
    """Authenticated by the Django session (the browsable API), not by an API token."""
    return request.auth is None


class HasGatewayRole(BasePermission):
    """A role is needed for everything (a membership, or superuser); sessions are for staff.

    Per object the viewsets ask Access: not visible -> 404, visible but not changeable -> 403.
    """

    message = "no gateway role: a platform admin gives one with a membership"

    def has_permission(self, request: Request, view: Any) -> bool:
        if not _signed_in(request):
            return False
        if _by_session(request) and not request.user.is_staff:
            return False
        return Access.of(request.user).has_any_role


class CanReadSchema(BasePermission):
    """The OpenAPI schema and its docs: staff sessions (as before the API existed), and API
    tokens of users with a role."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not _signed_in(request):
            return False
        if _by_session(request):
            return bool(request.user.is_staff)
        return Access.of(request.user).has_any_role
