"""Providers, routes and deployments, prices, MCP servers and tool grants."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db import models
from django.db.models import QuerySet

from governance.api.filters import FilterSet, IdFilter
from governance.api.serializers import catalog as s
from governance.api.viewsets import ServiceViewSet
from governance.models import Deployment, MCPServer, MCPToolGrant, ModelPrice, ModelRoute, Provider
from governance.services import providers

CREDENTIAL_INPUTS = ("credentials", "forget_credentials")


class ProviderFilter(FilterSet):
    kind = django_filters.ChoiceFilter(choices=Provider.Kind.choices)
    enabled = django_filters.BooleanFilter()

    class Meta:
        model = Provider
        fields = ("kind", "enabled")


class ProviderViewSet(ServiceViewSet):
    """Providers; credentials go in (write-only) and only their field names come out."""

    model = Provider
    input_serializer = s.ProviderInput
    output_serializer = s.ProviderOutput
    filterset_class = ProviderFilter
    ordering_fields = ["id", "name", "created_at"]

    def new_instance(self, data: dict[str, Any]) -> models.Model:
        settings = {k: v for k, v in data.items() if k not in CREDENTIAL_INPUTS}
        return Provider(**settings)

    def apply_changes(self, obj: models.Model, data: dict[str, Any]) -> None:
        super().apply_changes(obj, {k: v for k, v in data.items() if k not in CREDENTIAL_INPUTS})

    def save_changes(self, obj: models.Model, data: dict[str, Any]) -> None:
        assert isinstance(obj, Provider)
        providers.save_provider(
            actor=self.actor,
            provider=obj,
            updates=data.get("credentials") or {},
            remove=data.get("forget_credentials") or (),
        )


class RouteViewSet(ServiceViewSet):
    """Public model names; their deployments are listed in order (change them under
    deployments/)."""

    model = ModelRoute
    input_serializer = s.RouteInput
    output_serializer = s.RouteOutput
    ordering_fields = ["id", "public_name", "created_at"]

    def base_queryset(self) -> QuerySet[Any]:
        return ModelRoute.objects.prefetch_related("deployments")


class DeploymentFilter(FilterSet):
    route = IdFilter("route_id")
    provider = IdFilter("provider_id")

    class Meta:
        model = Deployment
        fields = ("route", "provider")


class DeploymentViewSet(ServiceViewSet):
    model = Deployment
    input_serializer = s.DeploymentInput
    update_serializer = s.DeploymentUpdate
    output_serializer = s.DeploymentOutput
    filterset_class = DeploymentFilter
    ordering_fields = ["id", "position", "created_at"]


class PriceFilter(FilterSet):
    model_pattern = django_filters.CharFilter()

    class Meta:
        model = ModelPrice
        fields = ("model_pattern",)


class PriceViewSet(ServiceViewSet):
    """Versioned prices in micro-dollars per million tokens (a new version is a new row with
    a later effective_from)."""

    model = ModelPrice
    input_serializer = s.PriceInput
    output_serializer = s.PriceOutput
    filterset_class = PriceFilter
    ordering_fields = ["id", "model_pattern", "effective_from", "created_at"]


class MCPServerViewSet(ServiceViewSet):
    model = MCPServer
    input_serializer = s.MCPServerInput
    output_serializer = s.MCPServerOutput
    ordering_fields = ["id", "name", "created_at"]


class MCPGrantFilter(FilterSet):
    server = IdFilter("server_id")
    team = IdFilter("team_id")
    virtual_key = IdFilter("virtual_key_id")

    class Meta:
        model = MCPToolGrant
        fields = ("server", "team", "virtual_key")


class MCPGrantViewSet(ServiceViewSet):
    model = MCPToolGrant
    input_serializer = s.MCPGrantInput
    update_serializer = s.MCPGrantUpdate
    output_serializer = s.MCPGrantOutput
    filterset_class = MCPGrantFilter
