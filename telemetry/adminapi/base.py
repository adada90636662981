"""What every Anthropic-compatible Admin API route shares: API-token authentication from
`x-api-key` (or `Authorization: Bearer`), Anthropic's error envelope and request ids, and the
organization a call acts on.

Errors look like Anthropic's: `{"type": "error", "error": {"type", "message"}, "request_id":
"req_…"}`. Every answer carries `request-id: req_<32 hex>` and `x-request-id: <uuid>`; GETs
add `Cache-Control: no-store`.

Which organization: a token whose user has roles in one organization acts on it; with roles in
several (or everywhere, with several organizations), the call names one in the
`x-gateway-organization` header or the `organization` query parameter (name or id).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.http import Http404, JsonResponse
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from governance.access import ALL_ROLES, Access
from governance.actors import Actor
from governance.models import ApiToken, Organization, Team
from governance.services import tokens

ORGANIZATION_HEADER = "x-gateway-organization"
CREDENTIALS_MESSAGE = "missing or invalid admin credentials"
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    406: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


class AdminApiError(exceptions.APIException):
    """An error answered in Anthropic's envelope with this status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(detail=message)
        self.status_code = status


class AdminKeyAuthentication(BaseAuthentication):
    """An API token (gwapi-…) in `x-api-key`, as Anthropic's admin keys are sent, or in
    `Authorization: Bearer`. The token row is read on every call: revocation is immediate."""

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, ApiToken] | None:
        secret = request.headers.get("x-api-key", "").strip()
        authorization = request.headers.get("authorization", "")
        if not secret and authorization[:7].lower() == "bearer ":
            secret = authorization[7:].strip()
        if not secret:
            return None
        token = tokens.authenticate(secret)
        if token is None:
            raise exceptions.AuthenticationFailed(CREDENTIALS_MESSAGE)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        # A challenge keeps DRF answering 401 (not 403) when no credentials were sent.
        return 'x-api-key realm="admin"'


class AdminKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "telemetry.adminapi.base.AdminKeyAuthentication"
    name = "adminApiKey"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "x-api-key",
            "description": "An API token (gwapi-…); `Authorization: Bearer` works too.",
        }


class HasRole(BasePermission):
    """A token of a user with a gateway role somewhere; what it may read or change is
    governance.access's answer, object by object."""

    message = "this API token's user has no gateway role"

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and Access.of(user).has_any_role)


def error_body(status: int, message: str, request_id: str) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


def _message(exc: Exception) -> str:
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return CREDENTIALS_MESSAGE
    if isinstance(exc, Http404):
        return "not found"
    if isinstance(exc, exceptions.ValidationError):
        return _flatten(exc.detail)
    if isinstance(exc, exceptions.APIException):
        return _flatten(exc.detail)
    return "internal error"


def _flatten(detail: Any) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in detail.items())
    if isinstance(detail, list):
        return "; ".join(_flatten(item) for item in detail)
    return str(detail)


def anthropic_errors(exc: Exception, context: dict[str, Any]) -> JsonResponse | None:
    """DRF's exception handler for these routes: Anthropic's envelope, always JSON."""
    if isinstance(exc, Http404):
        status = 404
    elif isinstance(exc, exceptions.APIException):
        status = exc.status_code
    else:
        return None  # a bug: Django's 500 handling
    view = context.get("view")
    request_id = getattr(view, "request_id", "") or new_request_id()
    response = JsonResponse(error_body(status, _message(exc), request_id), status=status)
    wait = getattr(exc, "wait", None)
    if status == 429 and wait:
        response["Retry-After"] = str(int(wait))
    return response


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


class AdminApiView(APIView):
    """Base of the Admin API routes: token auth, Anthropic errors and request-id headers."""

    authentication_classes = [AdminKeyAuthentication]
    permission_classes = [HasRole]
    renderer_classes = [JSONRenderer]
    request_id = ""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        self.request_id = new_request_id()
        super().initial(request, *args, **kwargs)

    def get_exception_handler(self) -> Any:
        return anthropic_errors

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        self.request_id = self.request_id or new_request_id()
        response["request-id"] = self.request_id
        response["x-request-id"] = str(uuid.uuid4())
        if request.method == "GET":
            response["Cache-Control"] = "no-store"
        return response

    @property
    def access(self) -> Access:
        return Access.of(self.request.user)

    def actor(self) -> Actor:
        return Actor.of_user(self.request.user)

    def note(self) -> str:
        token = self.request.auth
        prefix = token.prefix if isinstance(token, ApiToken) else "?"
        return f"Admin API, API token {prefix}…"


# --- which organization ------------------------------------------------------------------------


def organizations_of(access: Access) -> list[Organization]:
    """Every organization the user holds a role in (a team lead: where they lead a team)."""
    scope = access.organizations(ALL_ROLES)
    rows = Organization.objects.order_by("name")
    if scope.everywhere:
        return list(rows)
    led = Team.objects.filter(pk__in=access.led_teams).values_list("organization_id", flat=True)
    return list(rows.filter(pk__in={*scope.organizations, *led}))


def organization_for(request: Request, access: Access) -> Organization:
    named = request.headers.get(ORGANIZATION_HEADER) or request.query_params.get("organization")
    candidates = organizations_of(access)
    if named:
        for org in candidates:
            if named in (org.name, str(org.pk)):
                return org
        raise AdminApiError(404, "organization not found")
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise AdminApiError(403, "this API token's user has no role in any organization")
    raise AdminApiError(
        400,
        "this API token's user has roles in several organizations: name one in the "
        f"{ORGANIZATION_HEADER} header or the organization query parameter",
    )


def timestamp(moment: dt.datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a Z, as Anthropic writes them."""
    return str(moment.astimezone(dt.UTC).isoformat(timespec="milliseconds")).replace("+00:00", "Z")


def query_list(request: Request, name: str) -> list[str]:
    """A list parameter sent as `name[]=a&name[]=b` (Anthropic's SDKs), `name=a&name=b` or
    `name=a,b`."""
    values = [*request.query_params.getlist(f"{name}[]"), *request.query_params.getlist(name)]
    if any("\x00" in value for value in values):
        raise AdminApiError(400, f"{name}: contains a NUL character")  # no database stores one
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def query_limit(request: Request, *, default: int, maximum: int) -> int:
    text = request.query_params.get("limit")
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= maximum:
        raise AdminApiError(400, f"limit: must be an integer from 1 to {maximum}")
    return int(text)


@extend_schema_field({"type": "string", "pattern": "^(daily|weekly|monthly)$"})
class PeriodField(serializers.CharField):
    """A spend-limit period: daily, weekly or monthly. A pattern, not an enum: the schema's
    enums are named by field, and this one would collide with the budgets' own `period`."""


ERROR_SCHEMA = inline_serializer(
    name="AnthropicError",
    fields={
        "type": serializers.CharField(help_text='Always "error".'),
        "error": inline_serializer(
            name="AnthropicErrorDetail",
            fields={"type": serializers.CharField(), "message": serializers.CharField()},
        ),
        "request_id": serializers.CharField(),
    },
)
ERRORS = {status: ERROR_SCHEMA for status in (400, 401, 403, 404)}
