"""Memberships (who holds which role where) and API tokens (shown once, revocable).

Memberships are for platform admins of every organization (their access rule says so) and are
written through governance.services.memberships, which keeps the user's staff flag in step.
Every user with a role manages their own API tokens here; platform admins of every
organization manage everyone's.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from governance.access import Access
from governance.admin.base import ServiceModelAdmin, actor_for
from governance.models import ApiToken, Membership, Role
from governance.services import common, memberships, tokens
from governance.services.tokens import IssuedToken

ISSUED_TOKEN_TEMPLATE = "admin/governance/apitoken/issued_token.html"  # noqa: S105 (a path)
# Where save_model leaves the new token for response_add (see VirtualKeyAdmin: the request
# lives exactly as long as the response that shows the secret).
_ISSUED_ATTR = "_governance_issued_token"


@admin.register(Membership)
class MembershipAdmin(ServiceModelAdmin[Membership]):
    list_display = ("user", "role", "where", "team_names", "source", "updated_at")
    list_filter = ("role", "source", "organization")
    list_select_related = ("user", "organization")
    search_fields = ("user__username", "user__email", "organization__name", "teams__name")
    autocomplete_fields = ("user", "organization", "teams")
    fields = ("user", "role", "organization", "teams", "source")
    readonly_fields = ("source",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Membership]:
        return super().get_queryset(request).prefetch_related("teams")

    @admin.display(description="organization", ordering="organization__name")
    def where(self, obj: Membership) -> str:
        return obj.organization.name if obj.organization is not None else "every organization"

    @admin.display(description="teams")
    def team_names(self, obj: Membership) -> str:
        return ", ".join(sorted(team.name for team in obj.teams.all())) or "-"

    def save_model(self, request: HttpRequest, obj: Membership, form: Any, change: Any) -> None:
        memberships.save_membership(
            actor=actor_for(request), membership=obj, teams=form.cleaned_data.get("teams")
        )

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: Any) -> None:
        # The teams were set, audited, by save_membership; there are no inlines.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        memberships.delete_membership(actor=actor_for(request), membership=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Membership]) -> None:
        for membership in queryset:
            memberships.delete_membership(actor=actor_for(request), membership=membership)


def token_state(token: ApiToken) -> str:
    if token.revoked_at is not None:
        return f"revoked {token.revoked_at:%Y-%m-%d %H:%M}"
    if token.expires_at is not None and token.expires_at <= timezone.now():
        return f"expired {token.expires_at:%Y-%m-%d %H:%M}"
    return "active"


def _manages_everyone(request: HttpRequest) -> bool:
    return Access.of(request.user).holds(Role.PLATFORM_ADMIN)


@admin.register(ApiToken)
class ApiTokenAdmin(ServiceModelAdmin[ApiToken]):
    list_display = ("name", "user", "shown_prefix", "state", "expires_at", "last_used_at")
    list_select_related = ("user",)
    search_fields = ("name", "prefix", "user__username")
    autocomplete_fields = ("user",)
    actions = ("revoke_selected",)

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> Any:
        if obj is None:
            # Others create tokens for themselves only (save_form names them).
            return (
                ("name", "user", "expires_at")
                if _manages_everyone(request)
                else ("name", "expires_at")
            )
        return ("name", "user", "shown_prefix", "state", "expires_at", "last_used_at", "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> Any:
        if obj is None:
            return ()
        return ("user", "shown_prefix", "state", "last_used_at", "created_at")

    # Revoked, not deleted: the audit trail keeps naming the token that made each change.
    def has_delete_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False

    @admin.display(description="prefix", ordering="prefix")
    def shown_prefix(self, obj: ApiToken) -> str:
        return f"{obj.prefix}…"

    @admin.display(description="state")
    def state(self, obj: ApiToken) -> str:
        return token_state(obj)

    def save_form(self, request: HttpRequest, form: Any, change: bool) -> Any:
        if not change and "user" not in form.fields:
            form.instance.user = request.user
        return super().save_form(request, form, change)

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: Any) -> None:
        if change:
            common.save_instance(obj, actor=actor_for(request))
            return
        issued = tokens.create_token(
            actor=actor_for(request),
            user=obj.user,
            name=obj.name,
            expires_at=obj.expires_at,
        )
        for field in ApiToken._meta.concrete_fields:
            setattr(obj, field.attname, getattr(issued.token, field.attname))
        obj._state.adding = False
        obj._state.db = issued.token._state.db
        setattr(request, _ISSUED_ATTR, issued)

    def response_add(
        self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        issued: IssuedToken | None = getattr(request, _ISSUED_ATTR, None)
        if issued is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "API token created",
            "token": issued.token,
            "secret": issued.secret,
        }
        response = TemplateResponse(request, ISSUED_TOKEN_TEMPLATE, context)
        add_never_cache_headers(response)  # no browser or proxy may keep a copy of the secret
        return response

    @admin.action(description="Revoke selected API tokens", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        actor = actor_for(request)
        targets = list(queryset.filter(revoked_at__isnull=True))
        for token in targets:
            tokens.revoke_token(actor=actor, token=token)
        self.message_user(request, f"Revoked {len(targets)} API token(s).", messages.SUCCESS)
