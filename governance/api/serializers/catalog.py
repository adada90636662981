"""What every organization shares: providers (write-only credentials), model routes and their
deployments, prices, MCP servers and the grants of their tools."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.db import models
from rest_framework import serializers

from governance.api.serializers.base import InputSerializer, OutputSerializer
from governance.forms import CREDENTIAL_FIELDS
from governance.models import Deployment, MCPServer, MCPToolGrant, ModelPrice, ModelRoute, Provider
from governance.services import providers

PROVIDER_FIELDS = ("name", "kind", "base_url", "region", "settings", "enabled")
MAX_CREDENTIAL_LENGTH = 20_000  # a Google service-account JSON is a few kilobytes


class ProviderInput(InputSerializer):
    """Credentials are write-only: `credentials` sets the fields it names (others are kept),
    `forget_credentials` removes fields. Nothing ever returns their values."""

    credentials = serializers.DictField(
        child=serializers.CharField(max_length=MAX_CREDENTIAL_LENGTH, trim_whitespace=True),
        required=False,
        write_only=True,
        help_text=f"Write-only. Fields: {', '.join(CREDENTIAL_FIELDS)}.",
    )
    forget_credentials = serializers.ListField(
        child=serializers.ChoiceField(choices=list(CREDENTIAL_FIELDS)),
        required=False,
        write_only=True,
        help_text="Credential fields to remove.",
    )

    class Meta(InputSerializer.Meta):
        model = Provider
        fields = (*PROVIDER_FIELDS, "credentials", "forget_credentials")

    def validate_credentials(self, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(CREDENTIAL_FIELDS))
        if unknown:
            raise serializers.ValidationError(
                f"unknown credential fields {unknown}: use {', '.join(CREDENTIAL_FIELDS)}"
            )
        return value


class ProviderOutput(OutputSerializer):
    credential_fields = serializers.SerializerMethodField(
        help_text="Which credential fields are stored (never their values)."
    )

    class Meta:
        model = Provider
        fields = ("id", *PROVIDER_FIELDS, "credential_fields", "created_at", "updated_at")

    def get_credential_fields(self, provider: Provider) -> list[str]:
        try:
            return providers.credential_fields(provider)
        except ImproperlyConfigured:  # stored under another GATEWAY_ENCRYPTION_KEY
            return ["(undecryptable)"]


DEPLOYMENT_SETTINGS = ("provider", "upstream_model", "position", "weight", "enabled")


class DeploymentInput(InputSerializer):
    class Meta(InputSerializer.Meta):
        model = Deployment
        fields = ("route", *DEPLOYMENT_SETTINGS)


class DeploymentUpdate(InputSerializer):
    """A deployment stays on its route."""

    class Meta(InputSerializer.Meta):
        model = Deployment
        fields = DEPLOYMENT_SETTINGS


class DeploymentOutput(OutputSerializer):
    class Meta:
        model = Deployment
        fields = ("id", "route", *DEPLOYMENT_SETTINGS, "created_at", "updated_at")


class RouteInput(InputSerializer):
    class Meta(InputSerializer.Meta):
        model = ModelRoute
        fields = ("public_name", "description")


class RouteOutput(OutputSerializer):
    deployments = DeploymentOutput(many=True, read_only=True, help_text="In the order tried.")

    class Meta:
        model = ModelRoute
        fields = ("id", "public_name", "description", "deployments", "created_at", "updated_at")


class PriceInput(InputSerializer):
    """Prices in micro-dollars per million tokens."""

    class Meta(InputSerializer.Meta):
        model = ModelPrice
        exclude = ("created_at", "updated_at")


class PriceOutput(OutputSerializer):
    class Meta:
        model = ModelPrice
        fields = "__all__"


def _present(model: type[models.Model], names: tuple[str, ...]) -> tuple[str, ...]:
    """The fields of `names` the model has (MCP models grow fields release by release)."""
    have = {field.name for field in model._meta.get_fields()}
    return tuple(name for name in names if name in have)


TIMESTAMPS = ("created_at", "updated_at")
MCP_SECRETS = ("credentials_encrypted",)
GRANT_OWNERS = ("server", "organization", "project", "team", "virtual_key")


class MCPServerInput(InputSerializer):
    class Meta(InputSerializer.Meta):
        model = MCPServer
        exclude = (*MCP_SECRETS, *TIMESTAMPS)


class MCPServerOutput(OutputSerializer):
    credentials_set = serializers.BooleanField(
        source="has_credentials", help_text="Whether credentials are stored (write-only)."
    )

    class Meta:
        model = MCPServer
        exclude = MCP_SECRETS


class MCPGrantInput(InputSerializer):
    """Owned by exactly one organization, team, project or key (the model checks which)."""

    class Meta(InputSerializer.Meta):
        model = MCPToolGrant
        exclude = TIMESTAMPS


class MCPGrantUpdate(InputSerializer):
    """A grant keeps its server and owner; its tool patterns change."""

    class Meta(InputSerializer.Meta):
        model = MCPToolGrant
        exclude = (*_present(MCPToolGrant, GRANT_OWNERS), *TIMESTAMPS)


class MCPGrantOutput(OutputSerializer):
    class Meta:
        model = MCPToolGrant
        fields = "__all__"
