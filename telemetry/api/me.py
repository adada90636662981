"""GET /api/v1/me and /api/v1/me/statusline: a developer's own budgets, authenticated by the
virtual key itself (`x-api-key: sk-gw-…` or `Authorization: Bearer sk-gw-…`), never by a key in
the URL. Unknown, revoked and expired keys get 401; too many failed checks from one address in
a minute get 429 before any lookup (GATEWAY_AUTH_FAILURES_PER_MINUTE)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponse
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.policy import KeyPolicy
from telemetry import selfservice
from telemetry.api.renderers import json_errors


def client_address(request: Request) -> str:
    return str(request.META.get("REMOTE_ADDR") or "unknown")


class VirtualKeyAuthentication(BaseAuthentication):
    """The caller is a virtual key: `request.auth` is its policy snapshot, read afresh."""

    def authenticate(self, request: Request) -> tuple[AnonymousUser, KeyPolicy] | None:
        headers = {name.lower(): value for name, value in request.headers.items()}
        secret = selfservice.presented_secret(headers)
        if not secret:
            return None
        address = client_address(request)
        if selfservice.throttled(address):
            raise exceptions.Throttled(wait=60, detail="too many failed key checks; retry later")
        policy = selfservice.key_policy(secret, address=address)
        if policy is None:
            raise exceptions.AuthenticationFailed(
                "invalid virtual key (unknown, revoked or expired)"
            )
        return AnonymousUser(), policy

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="gateway"'


class VirtualKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "telemetry.api.me.VirtualKeyAuthentication"
    name = "virtualKey"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "x-api-key",
            "description": "The virtual key (sk-gw-…); `Authorization: Bearer` works too.",
        }


class IsVirtualKey(BasePermission):
    message = "send your virtual key in x-api-key or Authorization: Bearer"

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, KeyPolicy)


class PlainTextRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        return str(data).encode(self.charset)


class AnyAccept(BaseContentNegotiation):
    """The status line is text whatever the client accepts: a shell one-liner in Claude Code's
    settings should not have to name a media type."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(
        self, request: Request, renderers: Any, format_suffix: str | None = None
    ) -> tuple[Any, str]:
        return renderers[0], renderers[0].media_type


class KeyView(APIView):
    authentication_classes = [VirtualKeyAuthentication]
    permission_classes = [IsVirtualKey]

    def get_exception_handler(self) -> Any:
        return json_errors

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Cache-Control"] = "no-store"  # one developer's figures, behind their key
        return response


ME_SCHEMA = inline_serializer(
    name="Me",
    fields={
        "key": serializers.DictField(help_text="The key: name, prefix, team, organization…"),
        "budgets": serializers.ListField(
            child=serializers.DictField(),
            help_text=(
                "Every budget the key is held to, most specific first: level, owner, period, "
                "limit/spent/remaining (micro-dollars and USD), percent_used, resets_at, forecast."
            ),
        ),
        "statusline": serializers.CharField(),
        "rate_limits": serializers.ListField(child=serializers.DictField()),
        "models": serializers.DictField(help_text="allowed names, routed patterns, rules"),
        "usage": serializers.DictField(
            help_text="The key's own last 30 days: by_day, by_model, by_day_and_model, sessions."
        ),
        "generated_at": serializers.DateTimeField(),
    },
)
ERROR = inline_serializer(name="MeError", fields={"detail": serializers.CharField()})


class MeView(KeyView):
    renderer_classes = [JSONRenderer]

    @extend_schema(
        operation_id="me",
        summary="My budgets, limits, models and usage",
        description=(
            "Authenticated by the virtual key itself. The key's budgets and every ceiling above "
            "it (parent key, team, project, organization, model tiers) with spend, remainder, "
            "reset and forecast; rate limits; allowed models; the key's own usage of the last "
            "30 days by day, model and session. Never another key's figures."
        ),
        responses={200: ME_SCHEMA, 401: ERROR, 429: ERROR},
        tags=["self-service"],
    )
    def get(self, request: Request) -> Response:
        assert isinstance(request.auth, KeyPolicy)
        return Response(selfservice.overview(request.auth))


class StatuslineView(KeyView):
    renderer_classes = [PlainTextRenderer]
    content_negotiation_class = AnyAccept

    @extend_schema(
        operation_id="me_statusline",
        summary="One line for Claude Code's statusLine",
        description='The fullest budget, e.g. "team budget 63 % used, resets Dec 1".',
        responses={
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR),
            # Errors are JSON whatever the client accepts (json_errors).
            (401, "application/json"): ERROR,
            (429, "application/json"): ERROR,
        },
        tags=["self-service"],
    )
    def get(self, request: Request) -> HttpResponse:
        assert isinstance(request.auth, KeyPolicy)
        text = selfservice.statusline(request.auth)
        return HttpResponse(text + "\n", content_type="text/plain; charset=utf-8")
