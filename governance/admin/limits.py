"""Rate limits and model policies: standalone lists plus one-per-owner inlines."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from governance.admin.base import ServiceModelAdmin, StackedInlineBase
from governance.forms import ModelPolicyForm
from governance.models import ModelPolicy, RateLimit

OWNER_SELECT_RELATED = ("team", "team__organization", "virtual_key", "virtual_key__parent")
OWNER_SEARCH = ("team__name", "virtual_key__name", "virtual_key__owner")


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


class RateLimitInline(StackedInlineBase[RateLimit, Any]):
    model = RateLimit
    fields = ("requests_per_minute", "tokens_per_minute", "concurrent")
    extra = 0
    max_num = 1


class ModelPolicyInline(StackedInlineBase[ModelPolicy, Any]):
    model = ModelPolicy
    form = ModelPolicyForm
    fields = ("allowed_patterns", "denied_patterns", "overrides")
    extra = 0
    max_num = 1


@admin.register(RateLimit)
class RateLimitAdmin(ServiceModelAdmin[RateLimit]):
    list_display = ("owner", "requests", "tokens", "concurrency")
    list_select_related = OWNER_SELECT_RELATED
    search_fields = OWNER_SEARCH
    autocomplete_fields = ("team", "virtual_key")
    fieldsets = (
        ("Owner (one of)", {"fields": ("team", "virtual_key")}),
        ("Limits", {"fields": ("requests_per_minute", "tokens_per_minute", "concurrent")}),
    )

    @admin.display(description="owner")
    def owner(self, obj: RateLimit) -> str:
        return f"key {obj.virtual_key}" if obj.virtual_key else f"team {obj.team}"

    @admin.display(description="requests / min", ordering="requests_per_minute")
    def requests(self, obj: RateLimit) -> str:
        return _count(obj.requests_per_minute)

    @admin.display(description="tokens / min", ordering="tokens_per_minute")
    def tokens(self, obj: RateLimit) -> str:
        return _count(obj.tokens_per_minute)

    @admin.display(description="concurrent", ordering="concurrent")
    def concurrency(self, obj: RateLimit) -> str:
        return _count(obj.concurrent)


@admin.register(ModelPolicy)
class ModelPolicyAdmin(ServiceModelAdmin[ModelPolicy]):
    form = ModelPolicyForm
    list_display = ("owner", "allowed", "denied", "override_count")
    list_select_related = OWNER_SELECT_RELATED
    search_fields = OWNER_SEARCH
    autocomplete_fields = ("team", "virtual_key")
    fieldsets = (
        ("Owner (one of)", {"fields": ("team", "virtual_key")}),
        ("Models", {"fields": ("allowed_patterns", "denied_patterns", "overrides")}),
    )

    @admin.display(description="owner")
    def owner(self, obj: ModelPolicy) -> str:
        return f"key {obj.virtual_key}" if obj.virtual_key else f"team {obj.team}"

    @admin.display(description="allowed")
    def allowed(self, obj: ModelPolicy) -> str:
        return ", ".join(obj.allowed_patterns) or "all models"

    @admin.display(description="denied")
    def denied(self, obj: ModelPolicy) -> str:
        return ", ".join(obj.denied_patterns) or "-"

    @admin.display(description="overrides")
    def override_count(self, obj: ModelPolicy) -> str:
        return ", ".join(f"{src} → {dst}" for src, dst in obj.overrides.items()) or "-"
