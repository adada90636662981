"""Claude Code sign-in in the admin: a team's sign-in key and managed settings (on the team
page), the organization's base layer (on the organization page), and who is signed in with
which key (developer keys and sessions: read-only; sessions can be ended, developer keys
forgotten)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import ForeignKey, QuerySet
from django.forms import ModelChoiceField
from django.http import HttpRequest

from governance.admin.base import RoleModelAdmin, ServiceModelAdmin, StackedInlineBase, actor_for
from governance.models import (
    DeveloperKey,
    Organization,
    OrganizationSignIn,
    SignInSession,
    Team,
    TeamSignIn,
)
from governance.services import signin


class TeamSignInInline(StackedInlineBase[TeamSignIn, Team]):
    model = TeamSignIn
    fields = ("signin_key", "managed_settings")
    extra = 0
    max_num = 1
    verbose_name = "Claude Code sign-in"
    verbose_name_plural = "Claude Code sign-in (sign-in key and managed settings)"

    def formfield_for_foreignkey(
        self, db_field: ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> ModelChoiceField[Any] | None:
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "signin_key" and isinstance(field, ModelChoiceField):
            assert field.queryset is not None
            # The team's own live top-level keys: sub-keys and other teams' keys are refused.
            match = request.resolver_match
            team_id = match.kwargs.get("object_id") if match is not None else None
            field.queryset = field.queryset.filter(
                team_id=team_id, parent__isnull=True, revoked_at__isnull=True
            )
        return field


class OrganizationSignInInline(StackedInlineBase[OrganizationSignIn, Organization]):
    model = OrganizationSignIn
    fields = ("managed_settings",)
    extra = 0
    max_num = 1
    verbose_name = "Claude Code managed settings (base layer of every team)"
    verbose_name_plural = verbose_name


@admin.register(DeveloperKey)
class DeveloperKeyAdmin(ServiceModelAdmin[DeveloperKey]):
    """Deleting a row forgets it: a developer whose key an administrator revoked may then sign
    in again (and gets a new sub-key)."""

    list_display = ("user", "team", "key", "key_state", "deprovisioned_at", "created_at")
    list_select_related = ("user", "team__organization", "key__parent")
    list_filter = ("team",)
    search_fields = ("user__username", "user__email", "key__name")
    readonly_fields = ("user", "team", "key", "deprovisioned_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="key")
    def key_state(self, obj: DeveloperKey) -> str:
        if obj.key.revoked_at is None:
            return "active"
        return "revoked at sign-in" if obj.deprovisioned_at else "revoked by an administrator"


@admin.register(SignInSession)
class SignInSessionAdmin(RoleModelAdmin[SignInSession]):
    list_display = ("user", "team", "key", "created_at", "refreshed_at", "state", "client")
    list_select_related = ("user", "team__organization", "key__parent")
    list_filter = ("team",)
    search_fields = ("user__username", "email", "subject")
    fields = (
        "user",
        "team",
        "key",
        "subject",
        "email",
        "groups",
        "created_at",
        "refreshed_at",
        "ends_at",
        "client",
        "revoked_at",
        "revoked_reason",
    )
    readonly_fields = fields
    actions = ("end_sessions",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # ended, never deleted: a session is part of who used which key

    @admin.display(description="state")
    def state(self, obj: SignInSession) -> str:
        if obj.revoked_at is not None:
            return f"ended: {obj.revoked_reason}"
        return "active" if obj.is_active else "expired"

    @admin.action(description="End the selected sessions", permissions=["change"])
    def end_sessions(self, request: HttpRequest, queryset: QuerySet[SignInSession]) -> None:
        ended = signin.revoke_sessions(
            list(queryset), actor=actor_for(request), reason=f"ended in the admin by {request.user}"
        )
        self.message_user(
            request,
            f"{ended} session(s) ended: their refresh tokens no longer work; access tokens "
            "already issued expire within minutes (revoke the key to stop them at once).",
            messages.SUCCESS,
        )
