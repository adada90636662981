"""Budgets, rate limits and model policies: the limits on an owner."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from governance.api.serializers.base import InputSerializer, OutputSerializer
from governance.models import Budget, ModelPolicy, RateLimit

BUDGET_SETTINGS = (
    "amount_micros",
    "period",
    "model_patterns",
    "provider_names",
    "alert_thresholds",
    "on_exhaust",
    "downgrade_model",
)
BUDGET_OWNERS = ("organization", "team", "project", "virtual_key")


class BudgetInput(InputSerializer):
    """A budget of an organization, or of one team, project or key (then the organization
    may be left out: it is the owner's)."""

    class Meta(InputSerializer.Meta):
        model = Budget
        fields = (*BUDGET_OWNERS, *BUDGET_SETTINGS)
        extra_kwargs = {"organization": {"required": False}}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        owners = [attrs.get(name) for name in ("team", "project", "virtual_key")]
        owner = next((o for o in owners if o is not None), None)
        if attrs.get("organization") is None:
            if owner is None:
                raise serializers.ValidationError(
                    {"organization": "give the organization, or a team, project or key"}
                )
            attrs["organization"] = owner.organization
        return attrs


class BudgetUpdate(InputSerializer):
    """A budget keeps its owner; its amount, period and rules change."""

    class Meta(InputSerializer.Meta):
        model = Budget
        fields = BUDGET_SETTINGS


class BudgetOutput(OutputSerializer):
    scope = serializers.CharField(
        read_only=True, help_text="organization, team, project or key: whose budget it is."
    )

    class Meta:
        model = Budget
        fields = ("id", *BUDGET_OWNERS, "scope", *BUDGET_SETTINGS, "created_at", "updated_at")


OWNER_FIELDS = ("team", "virtual_key")


class OwnedInput(InputSerializer):
    """Owned by exactly one team or key (the model checks which)."""


RATE_LIMIT_SETTINGS = ("requests_per_minute", "tokens_per_minute", "concurrent")


class RateLimitInput(OwnedInput):
    class Meta(InputSerializer.Meta):
        model = RateLimit
        fields = (*OWNER_FIELDS, *RATE_LIMIT_SETTINGS)


class RateLimitUpdate(InputSerializer):
    class Meta(InputSerializer.Meta):
        model = RateLimit
        fields = RATE_LIMIT_SETTINGS


class RateLimitOutput(OutputSerializer):
    class Meta:
        model = RateLimit
        fields = ("id", *OWNER_FIELDS, *RATE_LIMIT_SETTINGS, "created_at", "updated_at")


MODEL_POLICY_SETTINGS = ("allowed_patterns", "denied_patterns", "overrides")


class ModelPolicyInput(OwnedInput):
    class Meta(InputSerializer.Meta):
        model = ModelPolicy
        fields = (*OWNER_FIELDS, *MODEL_POLICY_SETTINGS)


class ModelPolicyUpdate(InputSerializer):
    class Meta(InputSerializer.Meta):
        model = ModelPolicy
        fields = MODEL_POLICY_SETTINGS


class ModelPolicyOutput(OutputSerializer):
    class Meta:
        model = ModelPolicy
        fields = ("id", *OWNER_FIELDS, *MODEL_POLICY_SETTINGS, "created_at", "updated_at")
