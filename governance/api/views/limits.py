"""Budgets (team leads' key budgets within the team's ceiling), rate limits, model policies."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db import models
from django.db.models import QuerySet

from governance.api.filters import FilterSet, IdFilter
from governance.api.serializers import limits as s
from governance.api.viewsets import ServiceViewSet
from governance.models import Budget, ModelPolicy, RateLimit, Role
from governance.services import budgets


class BudgetFilter(FilterSet):
    organization = IdFilter("organization_id")
    team = IdFilter("team_id")
    project = IdFilter("project_id")
    virtual_key = IdFilter("virtual_key_id")
    period = django_filters.ChoiceFilter(choices=Budget.Period.choices)

    class Meta:
        model = Budget
        fields = ("organization", "team", "project", "virtual_key", "period")


class BudgetViewSet(ServiceViewSet):
    model = Budget
    input_serializer = s.BudgetInput
    update_serializer = s.BudgetUpdate
    output_serializer = s.BudgetOutput
    filterset_class = BudgetFilter
    ordering_fields = ["id", "amount_micros", "created_at"]

    def base_queryset(self) -> QuerySet[Any]:
        return Budget.objects.select_related("virtual_key")

    def _as_team_lead(self, budget: Budget) -> bool:
        """Whether the caller changes this budget only as a team lead (then the team's own
        budget is its ceiling); platform admins and finance of the organization set any."""
        org = budget.organization_id
        return not any(self.access.holds(role, org) for role in (Role.PLATFORM_ADMIN, Role.FINANCE))

    def save_changes(self, obj: models.Model, data: dict[str, Any]) -> None:
        assert isinstance(obj, Budget)
        budgets.save_budget(
            actor=self.actor, budget=obj, within_team_ceiling=self._as_team_lead(obj)
        )


class OwnerFilter(FilterSet):
    team = IdFilter("team_id")
    virtual_key = IdFilter("virtual_key_id")


class RateLimitFilter(OwnerFilter):
    class Meta:
        model = RateLimit
        fields = ("team", "virtual_key")


class RateLimitViewSet(ServiceViewSet):
    model = RateLimit
    input_serializer = s.RateLimitInput
    update_serializer = s.RateLimitUpdate
    output_serializer = s.RateLimitOutput
    filterset_class = RateLimitFilter


class ModelPolicyFilter(OwnerFilter):
    class Meta:
        model = ModelPolicy
        fields = ("team", "virtual_key")


class ModelPolicyViewSet(ServiceViewSet):
    model = ModelPolicy
    input_serializer = s.ModelPolicyInput
    update_serializer = s.ModelPolicyUpdate
    output_serializer = s.ModelPolicyOutput
    filterset_class = ModelPolicyFilter
