"""Single sign-on in the admin: IdP groups -> roles (on the organization page, and a list of
its own for the mappings that hold in every organization), IdP groups -> teams (on the team
page), and who signed in as which identity-provider subject (read-only)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from governance.admin.base import ServiceModelAdmin, TabularInlineBase
from governance.models import IdpGroupRole, OIDCIdentity, Organization, Team, TeamIdpGroup


class IdpGroupRoleInline(TabularInlineBase[IdpGroupRole, Organization]):
    model = IdpGroupRole
    fields = ("group", "role")
    extra = 0
    verbose_name = "IdP group → role (single sign-on)"
    verbose_name_plural = "IdP groups → roles (single sign-on)"


class TeamIdpGroupInline(TabularInlineBase[TeamIdpGroup, Team]):
    model = TeamIdpGroup
    fields = ("group",)
    extra = 0
    verbose_name = "IdP group (single sign-on: its members belong to the team)"
    verbose_name_plural = "IdP groups (single sign-on: their members belong to the team)"


@admin.register(IdpGroupRole)
class IdpGroupRoleAdmin(ServiceModelAdmin[IdpGroupRole]):
    list_display = ("group", "role", "where")
    ordering = ("organization__name", "role", "group")
    list_filter = ("role", "organization")
    list_select_related = ("organization",)
    search_fields = ("group", "organization__name")
    autocomplete_fields = ("organization",)
    fields = ("group", "role", "organization")

    @admin.display(description="organization", ordering="organization__name")
    def where(self, obj: IdpGroupRole) -> str:
        return obj.organization.name if obj.organization is not None else "every organization"


@admin.register(OIDCIdentity)
class OIDCIdentityAdmin(ServiceModelAdmin[OIDCIdentity]):
    """Written by sign-ins only; deleting one makes the subject's next sign-in a new user."""

    list_display = ("user", "email", "subject", "issuer", "group_list")
    list_select_related = ("user",)
    search_fields = ("user__username", "email", "subject")
    readonly_fields = ("user", "issuer", "subject", "email", "groups")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="groups at the last sign-in")
    def group_list(self, obj: OIDCIdentity) -> str:
        return ", ".join(str(group) for group in obj.groups or [])
