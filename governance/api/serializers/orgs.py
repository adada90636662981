"""Organizations, teams and projects."""

from __future__ import annotations

from governance.api.serializers.base import InputSerializer, OutputSerializer
from governance.models import Organization, Project, Team

ORGANIZATION_FIELDS = (
    "name",
    "display_name",
    "timezone",
    "admission_fail_mode",
    "unpriced_models",
    "unpriced_fallback_model",
    "subscription_traffic",
    "log_retention_days",
)


class OrganizationInput(InputSerializer):
    class Meta(InputSerializer.Meta):
        model = Organization
        fields = ORGANIZATION_FIELDS


class OrganizationOutput(OutputSerializer):
    class Meta:
        model = Organization
        fields = ("id", *ORGANIZATION_FIELDS, "created_at", "updated_at")


class TeamInput(InputSerializer):
    class Meta(InputSerializer.Meta):
        model = Team
        fields = ("organization", "name", "description")


class TeamUpdate(InputSerializer):
    """A team stays in its organization."""

    class Meta(InputSerializer.Meta):
        model = Team
        fields = ("name", "description")


class TeamOutput(OutputSerializer):
    class Meta:
        model = Team
        fields = ("id", "organization", "name", "description", "created_at", "updated_at")


class ProjectInput(InputSerializer):
    class Meta(InputSerializer.Meta):
        model = Project
        fields = ("organization", "name", "description")


class ProjectUpdate(InputSerializer):
    """A project stays in its organization."""

    class Meta(InputSerializer.Meta):
        model = Project
        fields = ("name", "description")


class ProjectOutput(OutputSerializer):
    class Meta:
        model = Project
        fields = ("id", "organization", "name", "description", "created_at", "updated_at")
