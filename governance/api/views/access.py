"""Memberships (platform admins of every organization) and API tokens (everyone their own)."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db import models
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from governance.api.filters import FilterSet, IdFilter, revoked_filter
from governance.api.serializers import access as s
from governance.api.viewsets import ServiceViewSet
from governance.models import ApiToken, Membership, Role
from governance.services import memberships, tokens


class MembershipFilter(FilterSet):
    organization = IdFilter("organization_id")
    user = django_filters.CharFilter(field_name="user__username", label="username")
    role = django_filters.ChoiceFilter(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ("organization", "user", "role")


class MembershipViewSet(ServiceViewSet):
    model = Membership
    input_serializer = s.MembershipInput
    update_serializer = s.MembershipUpdate
    output_serializer = s.MembershipOutput
    filterset_class = MembershipFilter

    def base_queryset(self) -> QuerySet[Any]:
        return Membership.objects.select_related("user").prefetch_related("teams")

    def new_instance(self, data: dict[str, Any]) -> models.Model:
        return Membership(**{k: v for k, v in data.items() if k != "teams"})

    def apply_changes(self, obj: models.Model, data: dict[str, Any]) -> None:
        super().apply_changes(obj, {k: v for k, v in data.items() if k != "teams"})

    def save_changes(self, obj: models.Model, data: dict[str, Any]) -> None:
        assert isinstance(obj, Membership)
        memberships.save_membership(actor=self.actor, membership=obj, teams=data.get("teams"))

    def remove(self, obj: models.Model) -> None:
        assert isinstance(obj, Membership)
        memberships.delete_membership(actor=self.actor, membership=obj)


class TokenFilter(FilterSet):
    user = django_filters.CharFilter(field_name="user__username", label="username")
    revoked = revoked_filter()

    class Meta:
        model = ApiToken
        fields = ("user", "revoked")


class ApiTokenViewSet(ServiceViewSet):
    """API tokens: your own (platform admins of every organization: everyone's). The secret
    is in the create answer only; revoke takes effect on the next request."""

    model = ApiToken
    input_serializer = s.TokenInput
    output_serializer = s.TokenOutput
    action_serializers = {
        "create": (s.TokenInput, s.TokenWithSecret),
        "revoke": (None, s.TokenOutput),
    }
    filterset_class = TokenFilter
    ordering_fields = ["id", "name", "created_at"]
    http_method_names = ["get", "post", "head", "options"]

    def base_queryset(self) -> QuerySet[Any]:
        return ApiToken.objects.select_related("user")

    def new_instance(self, data: dict[str, Any]) -> models.Model:
        data.setdefault("user", self.request.user)
        return ApiToken(**data)

    def save_new(self, obj: models.Model, data: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        assert isinstance(obj, ApiToken)
        issued = tokens.create_token(
            actor=self.actor, user=obj.user, name=obj.name, expires_at=obj.expires_at
        )
        return issued.token, {"secret": issued.secret, "secret_withheld": False}

    @extend_schema(summary="Revoke the token now", request=None)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        token = self.get_object()
        self.require_change(token)
        return self.with_etag(self.represent(tokens.revoke_token(actor=self.actor, token=token)))
