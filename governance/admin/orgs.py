"""Organizations, teams and projects, each page showing what hangs below it."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from governance.admin.base import ServiceModelAdmin, TabularInlineBase
from governance.admin.budgets import (
    OrganizationBudgetInline,
    ProjectBudgetInline,
    TeamBudgetInline,
)
from governance.admin.identity import IdpGroupRoleInline, TeamIdpGroupInline
from governance.admin.keys import ProjectKeyInline, TeamKeyInline
from governance.admin.limits import ModelPolicyInline, RateLimitInline
from governance.admin.signin import OrganizationSignInInline, TeamSignInInline
from governance.models import Organization, Project, Team


class TeamInline(TabularInlineBase[Team, Organization]):
    model = Team
    fields = ("name", "description")
    extra = 0
    can_delete = False  # a team is deleted from its own page, which lists what depends on it
    show_change_link = True


class ProjectInline(TabularInlineBase[Project, Organization]):
    model = Project
    fields = ("name", "description")
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Organization)
class OrganizationAdmin(ServiceModelAdmin[Organization]):
    list_display = (
        "name",
        "display_name",
        "timezone",
        "admission_fail_mode",
        "log_retention_days",
        "team_count",
    )
    list_filter = ("admission_fail_mode", "unpriced_models", "subscription_traffic")
    search_fields = ("name", "display_name")
    inlines = (TeamInline, ProjectInline, OrganizationBudgetInline, IdpGroupRoleInline)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Organization]:
        # An aggregate drops Meta.ordering (GROUP BY); autocomplete pages need an order.
        return (
            super()
            .get_queryset(request)
            .annotate(team_total=Count("teams", distinct=True))
            .order_by("name")
        )

    def get_inlines(self, request: HttpRequest, obj: Organization | None) -> list[type[Any]]:
        inlines = list(super().get_inlines(request, obj))
        # Claude Code's managed settings are set once the organization exists (the add form
        # keeps its fields).
        return inlines if obj is None else [*inlines, OrganizationSignInInline]

    @admin.display(description="teams", ordering="team_total")
    def team_count(self, obj: Organization) -> int:
        return int(getattr(obj, "team_total", 0))


@admin.register(Team)
class TeamAdmin(ServiceModelAdmin[Team]):
    list_display = ("name", "organization", "description", "key_count")
    list_filter = ("organization",)
    list_select_related = ("organization",)
    search_fields = ("name", "description", "organization__name")
    autocomplete_fields = ("organization",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        return (
            super()
            .get_queryset(request)
            .annotate(key_total=Count("virtual_keys"))
            .order_by("organization__name", "name")
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Team | None = None) -> Any:
        # Moving a team would leave its keys and budgets in the old organization.
        return ("organization",) if obj is not None else ()

    def get_inlines(self, request: HttpRequest, obj: Team | None) -> list[type[Any]]:
        if obj is None:
            # A rate limit or model policy needs the saved team as its owner.
            return [TeamBudgetInline, TeamIdpGroupInline]
        return [
            TeamKeyInline,
            TeamBudgetInline,
            RateLimitInline,
            ModelPolicyInline,
            TeamIdpGroupInline,
            TeamSignInInline,  # its sign-in key is one of the saved team's keys
        ]

    @admin.display(description="keys", ordering="key_total")
    def key_count(self, obj: Team) -> int:
        return int(getattr(obj, "key_total", 0))


@admin.register(Project)
class ProjectAdmin(ServiceModelAdmin[Project]):
    list_display = ("name", "organization", "description", "key_count")
    list_filter = ("organization",)
    list_select_related = ("organization",)
    search_fields = ("name", "description", "organization__name")
    autocomplete_fields = ("organization",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Project]:
        return (
            super()
            .get_queryset(request)
            .annotate(key_total=Count("virtual_keys"))
            .order_by("organization__name", "name")
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Project | None = None) -> Any:
        return ("organization",) if obj is not None else ()

    def get_inlines(self, request: HttpRequest, obj: Project | None) -> list[type[Any]]:
        return [ProjectBudgetInline] if obj is None else [ProjectKeyInline, ProjectBudgetInline]

    @admin.display(description="keys", ordering="key_total")
    def key_count(self, obj: Project) -> int:
        return int(getattr(obj, "key_total", 0))
