"""Virtual keys: the secret is in the create and rotate answers only, never readable again."""

from __future__ import annotations

import datetime as dt
from typing import Any

import django_filters
from django.db import models
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from governance.api.conditional import etag_of
from governance.api.filters import FilterSet, IdFilter, revoked_filter
from governance.api.serializers import keys as s
from governance.api.viewsets import ServiceViewSet, no_store
from governance.models import VirtualKey
from governance.services import keys


class KeyFilter(FilterSet):
    organization = IdFilter("organization_id")
    team = IdFilter("team_id")
    project = IdFilter("project_id")
    parent = IdFilter("parent_id")
    revoked = revoked_filter()
    sub_keys = django_filters.BooleanFilter(
        field_name="parent", lookup_expr="isnull", exclude=True, label="sub-keys only (or none)"
    )

    class Meta:
        model = VirtualKey
        fields = ("organization", "team", "project", "parent", "revoked", "sub_keys")


class KeyViewSet(ServiceViewSet):
    """Keys: no delete (revoke instead: the ledger keeps naming the key)."""

    model = VirtualKey
    input_serializer = s.KeyInput
    update_serializer = s.KeyUpdate
    output_serializer = s.KeyOutput
    action_serializers = {
        "create": (s.KeyInput, s.KeyWithSecret),
        "rotate": (s.RotateInput, s.KeyWithSecret),
        "revoke": (s.RevokeInput, s.KeyOutput),
    }
    filterset_class = KeyFilter
    ordering_fields = ["id", "name", "created_at"]
    http_method_names = ["get", "post", "put", "patch", "head", "options"]

    def base_queryset(self) -> QuerySet[Any]:
        return VirtualKey.objects.select_related("parent")

    def new_instance(self, data: dict[str, Any]) -> models.Model:
        # As keys.create_key derives them: a sub-key lives in its parent's organization, team
        # and project, a team's key in the team's organization.
        parent, team = data.get("parent"), data.get("team")
        if parent is not None:
            data["organization"] = parent.organization
            data["team"], data["project"] = parent.team, parent.project
        elif team is not None and data.get("organization") is None:
            data["organization"] = team.organization
        return VirtualKey(**data)

    def save_new(self, obj: models.Model, data: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        issued = keys.create_key(actor=self.actor, **data)
        return issued.key, {"secret": issued.secret, "secret_withheld": False}

    @extend_schema(summary="Give the key a new secret (shown once)")
    @action(detail=True, methods=["post"])
    def rotate(self, request: Request, pk: str | None = None) -> Response:
        key = self.get_object()
        self.require_change(key)
        serializer = s.RotateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        grace = dt.timedelta(seconds=serializer.validated_data["grace_seconds"])
        issued = keys.rotate_key(actor=self.actor, key=key, grace=grace)
        data = self.represent(issued.key)
        body = {**data, "secret": issued.secret, "secret_withheld": False}
        return no_store(Response(body, headers={"ETag": etag_of(data)}))

    @extend_schema(summary="Revoke the key and its sub-keys now")
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        key = self.get_object()
        self.require_change(key)
        serializer = s.RevokeInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        revoked = keys.revoke_key(
            actor=self.actor, key=key, reason=serializer.validated_data["reason"]
        )
        return self.with_etag(self.represent(revoked))
