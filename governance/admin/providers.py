"""Providers (write-only credentials), model routes with their deployments, and prices."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet
from django.http import HttpRequest

from governance.admin.base import ServiceModelAdmin, TabularInlineBase, actor_for
from governance.forms import CREDENTIAL_FIELDS, ModelPriceForm, ProviderForm
from governance.models import Deployment, ModelPrice, ModelRoute, Provider
from governance.money import format_usd
from governance.services import providers
from governance.services.prices import RATE_FIELDS


@admin.register(Provider)
class ProviderAdmin(ServiceModelAdmin[Provider]):
    form = ProviderForm
    list_display = ("name", "kind", "base_url", "region", "enabled", "credentials_set")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "base_url", "region")
    readonly_fields = ("credentials_set",)
    fieldsets = (
        (None, {"fields": ("name", "kind", "base_url", "region", "enabled", "settings")}),
        (
            "Credentials",
            {
                "fields": ("credentials_set", *CREDENTIAL_FIELDS, "forget_credentials"),
                "description": "Stored encrypted and never shown again. Fill in only what "
                "changes; the kind decides which fields are read (api_key for Anthropic, "
                "access_key_id and secret_access_key for Bedrock, ...).",
            },
        ),
    )

    @admin.display(description="credentials set")
    def credentials_set(self, obj: Provider) -> str:
        try:
            names = providers.credential_fields(obj)
        except ImproperlyConfigured:
            return "stored, but cannot be decrypted (GATEWAY_ENCRYPTION_KEY changed?)"
        return ", ".join(names) or "none"

    def save_model(self, request: HttpRequest, obj: Provider, form: Any, change: Any) -> None:
        providers.save_provider(
            actor=actor_for(request),
            provider=obj,
            updates=form.credential_updates(),
            remove=form.credentials_to_forget(),
        )


class DeploymentInline(TabularInlineBase[Deployment, ModelRoute]):
    model = Deployment
    extra = 0
    autocomplete_fields = ("provider",)
    ordering = ("position", "id")


@admin.register(ModelRoute)
class ModelRouteAdmin(ServiceModelAdmin[ModelRoute]):
    list_display = ("public_name", "description", "served_by")
    search_fields = ("public_name", "description", "deployments__upstream_model")
    inlines = (DeploymentInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelRoute]:
        return super().get_queryset(request).prefetch_related("deployments__provider")

    @admin.display(description="served by (in order)")
    def served_by(self, obj: ModelRoute) -> str:
        deployments = sorted(obj.deployments.all(), key=lambda d: (d.position, d.pk))
        return " → ".join(
            f"{d.provider.name}:{d.upstream_model or '*'}" + ("" if d.enabled else " (off)")
            for d in deployments
        )


def _rate_column(rate: str) -> Any:
    @admin.display(description=f"{rate.replace('_', ' ')} $/MTok", ordering=f"{rate}_per_mtok")
    def column(obj: ModelPrice) -> str:
        return format_usd(getattr(obj, f"{rate}_per_mtok"))

    column.__name__ = f"{rate}_usd"
    return column


@admin.register(ModelPrice)
class ModelPriceAdmin(ServiceModelAdmin[ModelPrice]):
    form = ModelPriceForm
    list_display = ("model_pattern", "effective_from", *map(_rate_column, RATE_FIELDS), "long")
    list_filter = ("effective_from",)
    search_fields = ("model_pattern", "note")
    date_hierarchy = "effective_from"
    fieldsets = (
        (None, {"fields": ("model_pattern", "effective_from", "note")}),
        ("Prices (USD per million tokens)", {"fields": tuple(f"{r}_usd" for r in RATE_FIELDS)}),
        (
            "Long context",
            {
                "fields": ("long_context_threshold", *(f"long_{r}_usd" for r in RATE_FIELDS)),
                "description": "When the whole prompt exceeds the threshold (tokens), every "
                "category uses these prices instead.",
            },
        ),
    )

    @admin.display(description="long context")
    def long(self, obj: ModelPrice) -> str:
        if obj.long_context_threshold is None:
            return "-"
        return f"over {obj.long_context_threshold:,} tokens"
