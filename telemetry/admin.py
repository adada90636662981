"""Telemetry in the Django admin.

One section per feature; add new registrations in a section of their own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path, reverse
from django.utils.html import format_html

from governance.admin.base import RoleModelAdmin, ServiceModelAdmin, actor_for
from governance.admin.permissions import visible
from governance.forms import ModelForm
from governance.models import Organization
from governance.money import format_usd
from telemetry import access, alerts, channels, dead_letters, ledger, provider_health, spool
from telemetry.dashboards.admin_columns import percent_bar
from telemetry.models import AlertChannel, AlertEvent, BudgetPeriodRecord

M = TypeVar("M", AlertChannel, AlertEvent)

# --- alerts: channels (editable, audited) and alert events (read-only) ---------------------


def _with_organization_name(queryset: QuerySet[M]) -> QuerySet[M]:
    """Alert rows keep a plain organization id; the name comes in the same query."""
    name = Organization.objects.filter(pk=OuterRef("organization_id")).values("name")[:1]
    annotated: QuerySet[M] = queryset.annotate(organization_name=Subquery(name))
    return annotated


class WriteOnlyURLInput(forms.TextInput):
    """Shows email addresses, never a URL: a webhook URL is a secret, write-only here."""

    def format_value(self, value: Any) -> str | None:
        text = super().format_value(value)
        return None if text and "://" in text else text


class AlertChannelForm(ModelForm[AlertChannel]):
    organization = forms.ModelChoiceField(queryset=Organization.objects.all())

    class Meta:
        model = AlertChannel
        fields = ("name", "kind", "target", "enabled")
        widgets = {"target": WriteOnlyURLInput(attrs={"autocomplete": "off", "size": 60})}
        help_texts = {
            "target": "Email: one or more addresses separated by commas. Webhook: an http(s) "
            "URL; Slack: the incoming-webhook URL. A URL is stored encrypted and never shown "
            "again: leave blank to keep the stored one.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.initial["organization"] = self.instance.organization_id

    def clean(self) -> dict[str, Any] | None:
        cleaned = super().clean()
        organization = self.cleaned_data.get("organization")
        if organization is None:
            return cleaned
        self.instance.organization_id = organization.pk
        name = self.cleaned_data.get("name")
        taken = AlertChannel.objects.filter(organization_id=organization.pk, name=name)
        if self.instance.pk is not None:
            taken = taken.exclude(pk=self.instance.pk)
        if name and taken.exists():
            self.add_error("name", "this organization already has a channel with this name")
        return cleaned


@admin.register(AlertChannel)
class AlertChannelAdmin(ServiceModelAdmin[AlertChannel]):
    form = AlertChannelForm
    fields = ("organization", "name", "kind", "target", "stored_url", "enabled")
    readonly_fields = ("stored_url",)
    list_display = ("name", "organization_name", "kind", "target_redacted", "enabled")
    list_filter = ("kind", "enabled")
    search_fields = ("name",)
    actions = ("send_test_alert",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[AlertChannel]:
        return _with_organization_name(super().get_queryset(request))

    def get_form(
        self,
        request: HttpRequest,
        obj: AlertChannel | None = None,
        change: bool = False,
        **kwargs: Any,
    ) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        # The organization is a plain id column: its menu is narrowed here, not by the base.
        if "organization" in form.base_fields:
            field = form.base_fields["organization"]
            field.queryset = visible(request, Organization.objects.all())
        return form

    @admin.display(description="organization")
    def organization_name(self, obj: AlertChannel) -> str:
        return str(getattr(obj, "organization_name", None) or obj.organization_id)

    @admin.display(description="target")
    def target_redacted(self, obj: AlertChannel) -> str:
        return channels.describe_target(obj)

    @admin.display(description="stored webhook URL")
    def stored_url(self, obj: AlertChannel) -> str:
        if not obj.is_webhook or not obj.secret_target:
            return "not set"
        return f"set ({channels.describe_target(obj)})"

    def save_model(self, request: HttpRequest, obj: AlertChannel, form: Any, change: Any) -> None:
        channels.save_channel(obj, actor=actor_for(request))

    def delete_model(self, request: HttpRequest, obj: AlertChannel) -> None:
        channels.delete_channel(obj, actor=actor_for(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[AlertChannel]) -> None:
        for channel in queryset:
            channels.delete_channel(channel, actor=actor_for(request))

    @admin.action(description="Send a test message to the selected channels")
    def send_test_alert(self, request: HttpRequest, queryset: QuerySet[AlertChannel]) -> None:
        for channel in queryset:
            payload = {
                "type": "test",
                "title": "Test alert from the Claude gateway",
                "message": f'Alert channel "{channel.name}" works: budget alerts will come here.',
            }
            result = channels.deliver(channel, payload)
            level = messages.SUCCESS if result.ok else messages.ERROR
            self.message_user(request, f"{channel.name}: {result.detail}", level)


@admin.register(AlertEvent)
class AlertEventAdmin(RoleModelAdmin[AlertEvent]):
    list_display = (
        "created_at",
        "kind",
        "threshold",
        "organization_name",
        "budget_link",
        "period_label",
        "spent",
        "limit",
        "status",
    )
    list_filter = ("kind", "period_label")
    search_fields = ("message", "period_label")
    date_hierarchy = "created_at"
    fields = (
        "message",
        "kind",
        "threshold",
        "organization_name",
        "budget_link",
        "period_label",
        "spent",
        "limit",
        "forecast_exhaustion",
        "created_at",
        "status",
        "attempts",
        "next_attempt_at",
        "delivered_at",
        "delivery_log_json",
        "payload_json",
    )
    readonly_fields = fields

    # Alerts are a record of what was sent: not edited or deleted by hand.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AlertEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AlertEvent | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[AlertEvent]:
        return _with_organization_name(super().get_queryset(request))

    @admin.display(description="organization")
    def organization_name(self, obj: AlertEvent) -> str:
        return str(getattr(obj, "organization_name", None) or obj.organization_id)

    @admin.display(description="threshold", ordering="threshold_percent")
    def threshold(self, obj: AlertEvent) -> str:
        return f"{obj.threshold_percent}%" if obj.kind == AlertEvent.Kind.THRESHOLD else "-"

    @admin.display(description="budget")
    def budget_link(self, obj: AlertEvent) -> str:
        url = reverse("admin:governance_budget_change", args=[obj.budget_id])
        return format_html('<a href="{}">budget #{}</a>', url, obj.budget_id)

    @admin.display(description="spent", ordering="spent_micros")
    def spent(self, obj: AlertEvent) -> str:
        return format_usd(obj.spent_micros)

    @admin.display(description="limit", ordering="limit_micros")
    def limit(self, obj: AlertEvent) -> str:
        return format_usd(obj.limit_micros)

    @admin.display(description="delivery")
    def status(self, obj: AlertEvent) -> str:
        log = obj.delivery_log
        if any(entry.get("silent") for entry in log):
            return "recorded silently"
        sent = sum(1 for entry in log if entry.get("ok"))
        if obj.delivered_at is not None:
            return f"sent to {sent} channel(s)" if sent else "no channel"
        if obj.attempts == 0:
            return "pending"
        if obj.attempts >= alerts.MAX_ATTEMPTS:
            return f"failed: gave up after {obj.attempts} attempts"
        return f"retrying ({obj.attempts} attempts, {sent} channel(s) reached)"

    @admin.display(description="delivery log")
    def delivery_log_json(self, obj: AlertEvent) -> str:
        return _pretty_json(obj.delivery_log)

    @admin.display(description="payload sent")
    def payload_json(self, obj: AlertEvent) -> str:
        return _pretty_json(obj.payload)


def _pretty_json(value: Any) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html('<pre style="margin:0">{}</pre>', text)


# --- utilisation: budget period history (read-only) with spent / limit / % bar -------------
# The budget, team and key lists get their "budget used" column from
# telemetry.dashboards.admin_columns (added by TelemetryConfig.ready).


@admin.register(BudgetPeriodRecord)
class BudgetPeriodRecordAdmin(RoleModelAdmin[BudgetPeriodRecord]):
    list_display = (
        "budget_column",
        "period_label",
        "period_start",
        "period_end",
        "used",
        "closed",
        "updated_at",
    )
    list_filter = ("closed", "period_label")
    search_fields = ("period_label",)
    ordering = ("-period_start", "budget_id")

    # Written by the period job from the ledger: a record, not something to edit.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: BudgetPeriodRecord | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: BudgetPeriodRecord | None = None
    ) -> bool:
        return False

    @admin.display(description="budget", ordering="budget_id")
    def budget_column(self, obj: BudgetPeriodRecord) -> str:
        url = reverse("admin:governance_budget_change", args=[obj.budget_id])
        return format_html('<a href="{}">budget #{}</a>', url, obj.budget_id)

    @admin.display(description="spent / limit", ordering="spent_micros")
    def used(self, obj: BudgetPeriodRecord) -> str:
        return percent_bar(obj.spent_micros, obj.limit_micros)


# --- usage dead letters: events the ledger refused (files under GATEWAY_SPOOL_DIR/dead) -----
# Files on the gateway host, not rows: a page of its own, linked from the admin index
# (templates/admin/index.html), which also warns while any exist.

DEAD_LETTERS_TEMPLATE = "admin/telemetry/dead_letters.html"


def dead_letters_view(request: HttpRequest) -> HttpResponse:
    """GET lists the dead letters; POST retries or discards the chosen ones.

    Dead letters are events of any organization: read by those who read every organization's
    usage, retried or discarded by platform admins of every organization."""
    if not access.reads_all_usage(request.user):
        raise PermissionDenied
    spool_dir = Path(settings.GATEWAY_SPOOL_DIR)
    can_change = access.handles_dead_letters(request.user)
    if request.method == "POST":
        if not can_change:
            raise PermissionDenied
        _apply_dead_letter_action(request, spool_dir)
        return redirect("admin:telemetry_dead_letters")
    context = {
        **admin.site.each_context(request),
        "title": "Usage dead letters",
        "listing": dead_letters.list_dead_letters(spool_dir),
        "backlog": spool.backlog(spool_dir),
        "can_change": can_change,
    }
    return TemplateResponse(request, DEAD_LETTERS_TEMPLATE, context)


def _apply_dead_letter_action(request: HttpRequest, spool_dir: Path) -> None:
    action = request.POST.get("action")
    ids = None if request.POST.get("all") else set(request.POST.getlist("selected"))
    if ids is not None and not ids:
        messages.warning(request, "Choose dead letters first.")
        return
    if action == "discard":
        if ids is None:
            messages.error(request, "Discard needs dead letters chosen one by one.")
            return
        discarded = dead_letters.discard(spool_dir, ids).discarded
        messages.success(request, f"Discarded {discarded} dead letter(s) (kept in dead/discarded).")
        return
    if action != "retry":
        messages.error(request, "Unknown action.")
        return
    try:
        outcome = dead_letters.retry(spool_dir, ids, write=ledger.write_events_isolating)
    except ledger.CONNECTION_ERRORS:
        messages.error(request, "The ledger database is unavailable; what was not written stays.")
        return
    level = messages.SUCCESS if not outcome.failed else messages.WARNING
    messages.add_message(
        request,
        level,
        f"Written to the ledger: {outcome.written}. Still refused: {outcome.failed}.",
    )


def _with_dead_letter_urls(get_urls: Callable[[], list[URLPattern | URLResolver]]) -> Any:
    """The default admin site's URLs plus the dead-letter page (no model to register it by)."""

    def urls() -> list[URLPattern | URLResolver]:
        page = path(
            "telemetry/dead-letters/",
            admin.site.admin_view(dead_letters_view),
            name="telemetry_dead_letters",
        )
        return [page, *get_urls()]

    return urls


admin.site.get_urls = _with_dead_letter_urls(admin.site.get_urls)  # type: ignore[method-assign]


# --- provider health: the failover breaker per deployment (telemetry/provider_health.py) ----
# State in Redis or in the gateway process, not rows: a page of its own, linked from the
# provider list's "health" column and the admin index.


def _with_provider_health_url(get_urls: Callable[[], list[URLPattern | URLResolver]]) -> Any:
    def urls() -> list[URLPattern | URLResolver]:
        page = path(
            "telemetry/provider-health/",
            admin.site.admin_view(provider_health.provider_health_view),
            name="telemetry_provider_health",
        )
        return [page, *get_urls()]

    return urls


admin.site.get_urls = _with_provider_health_url(admin.site.get_urls)  # type: ignore[method-assign]
