"""Virtual keys: issued, rotated and revoked through the key service; secrets shown exactly once.

A new secret exists in clear only in the response that issued it: it is rendered straight into
that page (sent with no-store) and never put in the session, messages, cookies, URLs or logs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html
from django.utils.safestring import SafeString

from governance.admin import tools
from governance.admin.base import ServiceModelAdmin, TabularInlineBase, actor_for
from governance.admin.budgets import KeyBudgetInline
from governance.admin.limits import ModelPolicyInline, RateLimitInline
from governance.forms import RevokeKeysForm, RotateKeysForm, VirtualKeyAddForm
from governance.models import VirtualKey
from governance.services import keys
from governance.services.keys import IssuedKey

ISSUED_TEMPLATE = "admin/governance/virtualkey/issued_secrets.html"
CONFIRM_TEMPLATE = "admin/governance/virtualkey/confirm_key_action.html"
# Where save_model leaves the issued key for response_add: the request object, which lives
# exactly as long as the response that shows the secret.
_ISSUED_ATTR = "_governance_issued_keys"

ADD_FIELDS = (
    "name",
    "organization",
    "team",
    "project",
    "parent",
    "owner",
    "expires_at",
    "log_content",
)
PLACEMENT_FIELDS = ("organization", "team", "project", "parent")
SECRET_FIELDS = ("shown_prefix", "state", "old_secret_valid_until", "revoked_at")


def key_state(key: VirtualKey, now: dt.datetime | None = None) -> str:
    now = now or timezone.now()
    if key.revoked_at is not None:
        return f"revoked {key.revoked_at:%Y-%m-%d %H:%M}"
    if key.expires_at is not None and key.expires_at <= now:
        return f"expired {key.expires_at:%Y-%m-%d %H:%M}"
    if key.previous_valid_until is not None and key.previous_valid_until > now:
        return f"active (old secret valid until {key.previous_valid_until:%Y-%m-%d %H:%M})"
    return "active"


def prefix_label(key: VirtualKey) -> str:
    return f"{key.prefix}…"


class KeyStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("active", "active"),
            ("grace", "old secret still valid"),
            ("expired", "expired"),
            ("revoked", "revoked"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        not_expired = Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        match self.value():
            case "active":
                return queryset.filter(not_expired, revoked_at__isnull=True)
            case "grace":
                return queryset.filter(revoked_at__isnull=True, previous_valid_until__gt=now)
            case "expired":
                return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
            case "revoked":
                return queryset.filter(revoked_at__isnull=False)
        return queryset


class KeyListInline(TabularInlineBase[VirtualKey, Any]):
    """A read-only list of keys with links; keys are issued and changed on their own page."""

    model = VirtualKey
    fields = ("prefix_column", "owner", "state_column", "expires_at", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = "virtual keys"

    def has_add_permission(self, request: HttpRequest, obj: Any) -> bool:  # type: ignore[override]
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[VirtualKey]:
        return super().get_queryset(request).select_related("parent")

    @admin.display(description="prefix")
    def prefix_column(self, obj: VirtualKey) -> str:
        return prefix_label(obj)

    @admin.display(description="state")
    def state_column(self, obj: VirtualKey) -> str:
        return key_state(obj)


class TeamKeyInline(KeyListInline):
    fk_name = "team"


class ProjectKeyInline(KeyListInline):
    fk_name = "project"


class SubKeyInline(KeyListInline):
    fk_name = "parent"
    verbose_name = "sub-key"
    verbose_name_plural = "sub-keys"


@admin.register(VirtualKey)
class VirtualKeyAdmin(ServiceModelAdmin[VirtualKey]):
    list_display = (
        "__str__",
        "shown_prefix",
        "organization",
        "team",
        "project",
        "owner",
        "state",
        "expires_at",
        "created_at",
    )
    list_filter = (KeyStateFilter, "organization", "team", "log_content")
    list_select_related = (
        "organization",
        "team",
        "team__organization",
        "project",
        "project__organization",
        "parent",
    )
    search_fields = (
        "name",
        "prefix",
        "owner",
        "parent__name",
        "team__name",
        "project__name",
        "organization__name",
    )
    autocomplete_fields = ("organization", "team", "project", "parent")
    actions = ("revoke_selected", "rotate_selected")

    # --- forms -----------------------------------------------------------------------------

    def get_fieldsets(self, request: HttpRequest, obj: VirtualKey | None = None) -> Any:
        if obj is None:
            return [(None, {"fields": ADD_FIELDS})]
        return [
            (None, {"fields": ("name", "owner", "expires_at", "log_content")}),
            ("Placement", {"fields": (*PLACEMENT_FIELDS, "add_sub_key")}),
            ("MCP tools", {"fields": ("mcp_code_mode", "mcp_tools")}),
            (
                "Secret",
                {
                    "fields": SECRET_FIELDS,
                    "description": "Only a hash of the secret is stored. Use the "
                    '"Rotate selected keys" action to issue a new secret.',
                },
            ),
            ("History", {"fields": ("created_at", "updated_at")}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: VirtualKey | None = None) -> Any:
        if obj is None:
            return ()
        # A key's place in the hierarchy is fixed: its budgets and sub-keys depend on it.
        return (
            *PLACEMENT_FIELDS,
            "add_sub_key",
            "mcp_tools",
            *SECRET_FIELDS,
            "created_at",
            "updated_at",
        )

    def get_form(
        self,
        request: HttpRequest,
        obj: VirtualKey | None = None,
        change: bool = False,
        **kwargs: Any,
    ) -> Any:
        if obj is None:
            kwargs["form"] = VirtualKeyAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_inlines(self, request: HttpRequest, obj: VirtualKey | None) -> list[type[Any]]:
        if obj is None:
            return []
        inlines: list[type[Any]] = [KeyBudgetInline, RateLimitInline, ModelPolicyInline]
        return inlines if obj.parent_id is not None else [SubKeyInline, *inlines]

    # --- columns and read-only fields ------------------------------------------------------

    @admin.display(description="prefix", ordering="prefix")
    def shown_prefix(self, obj: VirtualKey) -> str:
        return prefix_label(obj)

    @admin.display(description="state")
    def state(self, obj: VirtualKey) -> str:
        return key_state(obj)

    @admin.display(description="old secret valid until")
    def old_secret_valid_until(self, obj: VirtualKey) -> dt.datetime | None:
        return obj.previous_valid_until

    @admin.display(description="MCP tools this key can see")
    def mcp_tools(self, obj: VirtualKey) -> SafeString:
        return tools.key_tools_preview(obj)

    @admin.display(description="sub-keys")
    def add_sub_key(self, obj: VirtualKey) -> str:
        if obj.parent_id is not None:
            return "-"
        url = reverse("admin:governance_virtualkey_add")
        return format_html(
            '<a href="{}?parent={}&amp;organization={}">Add a sub-key</a>',
            url,
            obj.pk,
            obj.organization_id,
        )

    # --- issuing ---------------------------------------------------------------------------

    def access_subject(self, request: HttpRequest, obj: VirtualKey) -> VirtualKey:
        # A sub-key takes its parent's team and project (keys.create_key): a team lead may add
        # one under a key of their team without naming the team.
        if obj.pk is None and obj.parent is not None:
            obj.team, obj.project = obj.parent.team, obj.parent.project
        return obj

    def save_model(self, request: HttpRequest, obj: VirtualKey, form: Any, change: Any) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        issued = keys.create_key(
            actor=actor_for(request),
            organization=obj.organization,
            name=obj.name,
            team=obj.team,
            project=obj.project,
            parent=obj.parent,
            owner=obj.owner,
            expires_at=obj.expires_at,
            log_content=obj.log_content,
        )
        _adopt(obj, issued.key)
        setattr(request, _ISSUED_ATTR, [issued])

    def response_add(
        self, request: HttpRequest, obj: VirtualKey, post_url_continue: str | None = None
    ) -> HttpResponse:
        issued: list[IssuedKey] | None = getattr(request, _ISSUED_ATTR, None)
        if not issued:
            return super().response_add(request, obj, post_url_continue)
        # Also for popups: the secret page replaces the popup's usual close-and-select.
        return self.secrets_page(request, issued, title="Key created")

    def secrets_page(
        self,
        request: HttpRequest,
        issued: Sequence[IssuedKey],
        *,
        title: str,
        note: str = "",
        refused: Iterable[str] = (),
    ) -> TemplateResponse:
        rows = [
            {
                "key": item.key,
                "secret": item.secret,
                "url": reverse("admin:governance_virtualkey_change", args=[item.key.pk]),
            }
            for item in issued
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "note": note,
            "refused": list(refused),
            "rows": rows,
            "base_url": request.build_absolute_uri("/anthropic"),
        }
        response = TemplateResponse(request, ISSUED_TEMPLATE, context)
        add_never_cache_headers(response)  # no browser or proxy may keep a copy of the secret
        return response

    # --- actions ---------------------------------------------------------------------------

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_selected(
        self, request: HttpRequest, queryset: QuerySet[VirtualKey]
    ) -> TemplateResponse | None:
        form = RevokeKeysForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return self._confirm_page(
                request,
                queryset,
                form,
                action="revoke_selected",
                title="Revoke keys",
                intro="These keys stop working at once, with all their sub-keys. "
                "Revoking cannot be undone.",
                submit="Revoke",
            )
        actor = actor_for(request)
        targets = list(queryset.filter(revoked_at__isnull=True))
        for key in targets:
            keys.revoke_key(actor=actor, key=key, reason=form.cleaned_data["reason"])
        self.message_user(
            request,
            f"Revoked {len(targets)} key(s) and their sub-keys.",
            messages.SUCCESS,
        )
        return None

    @admin.action(description="Rotate selected keys (new secrets)", permissions=["change"])
    def rotate_selected(
        self, request: HttpRequest, queryset: QuerySet[VirtualKey]
    ) -> TemplateResponse | None:
        form = RotateKeysForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return self._confirm_page(
                request,
                queryset,
                form,
                action="rotate_selected",
                title="Rotate keys",
                intro="Each key gets a new secret, shown once on the next page. During the "
                "grace period the old secret keeps working, so clients can switch over.",
                submit="Rotate",
            )
        grace = dt.timedelta(hours=form.cleaned_data["grace_hours"])
        actor = actor_for(request)
        issued: list[IssuedKey] = []
        refused: list[str] = []
        for key in queryset:
            try:
                issued.append(keys.rotate_key(actor=actor, key=key, grace=grace))
            except ValidationError as error:
                refused.append(f"{key}: {' '.join(error.messages)}")
        if not issued:
            for reason in refused:
                self.message_user(request, reason, messages.ERROR)
            return None
        return self.secrets_page(
            request, issued, title="Keys rotated", note=_grace_note(grace), refused=refused
        )

    def _confirm_page(
        self,
        request: HttpRequest,
        queryset: QuerySet[VirtualKey],
        form: Form,
        *,
        action: str,
        title: str,
        intro: str,
        submit: str,
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "intro": intro,
            "submit": submit,
            "form": form,
            "action": action,
            "keys": list(queryset.select_related("parent")),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        return TemplateResponse(request, CONFIRM_TEMPLATE, context)


def _adopt(obj: VirtualKey, saved: VirtualKey) -> None:
    """Turn the form's unsaved instance into the issued key, for the admin log and redirects."""
    for field in VirtualKey._meta.concrete_fields:
        setattr(obj, field.attname, getattr(saved, field.attname))
    obj._state.adding = False
    obj._state.db = saved._state.db


def _grace_note(grace: dt.timedelta) -> str:
    if not grace:
        return "The old secrets stopped working now."
    until = timezone.localtime(timezone.now() + grace)
    return f"The old secrets keep working until {until:%Y-%m-%d %H:%M %Z}."
