"""Organizations, teams and projects."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from governance.api.filters import FilterSet, IdFilter
from governance.api.serializers import orgs as s
from governance.api.viewsets import ServiceViewSet
from governance.models import Organization, Project, Team


class OrganizationViewSet(ServiceViewSet):
    """Organizations: created and deleted by platform admins of every organization."""

    model = Organization
    input_serializer = s.OrganizationInput
    output_serializer = s.OrganizationOutput
    ordering_fields = ["id", "name", "created_at"]


class OrganizationScopedFilter(FilterSet):
    organization = IdFilter("organization_id")


class TeamFilter(OrganizationScopedFilter):
    class Meta:
        model = Team
        fields = ("organization",)


class TeamViewSet(ServiceViewSet):
    model = Team
    input_serializer = s.TeamInput
    update_serializer = s.TeamUpdate
    output_serializer = s.TeamOutput
    filterset_class = TeamFilter
    ordering_fields = ["id", "name", "created_at"]

    def base_queryset(self) -> QuerySet[Any]:
        return Team.objects.select_related("organization")


class ProjectFilter(OrganizationScopedFilter):
    class Meta:
        model = Project
        fields = ("organization",)


class ProjectViewSet(ServiceViewSet):
    model = Project
    input_serializer = s.ProjectInput
    update_serializer = s.ProjectUpdate
    output_serializer = s.ProjectOutput
    filterset_class = ProjectFilter
    ordering_fields = ["id", "name", "created_at"]
