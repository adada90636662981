"""Budgets in dollars: a list a finance admin can read, and inlines on every owner's page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from governance.admin.base import ServiceModelAdmin, TabularInlineBase, actor_for, save_budget
from governance.forms import BudgetForm, ParentAwareInlineFormSet
from governance.models import Budget
from governance.money import format_usd

INLINE_FIELDS = (
    "amount_usd",
    "period",
    "model_patterns",
    "provider_names",
    "alert_thresholds",
    "on_exhaust",
    "downgrade_model",
)


def owner_name(budget: Budget) -> str:
    if budget.virtual_key is not None:
        return str(budget.virtual_key)
    owner = budget.team or budget.project or budget.organization
    return owner.name


def exhaust_label(budget: Budget) -> str:
    if budget.on_exhaust == Budget.OnExhaust.DOWNGRADE:
        return f"downgrade to {budget.downgrade_model}"
    if budget.on_exhaust == Budget.OnExhaust.ALERT:
        return "alert only"
    return "block"


class BudgetInline(TabularInlineBase[Budget, Any]):
    model = Budget
    form = BudgetForm
    formset = ParentAwareInlineFormSet
    fields = INLINE_FIELDS
    extra = 0


class OrganizationBudgetInline(BudgetInline):
    """Only the organization-wide budgets; team, project and key budgets live on their pages."""

    fk_name = "organization"
    verbose_name = "organization-wide budget"
    verbose_name_plural = "organization-wide budgets"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Budget]:
        return (
            super()
            .get_queryset(request)
            .filter(team__isnull=True, project__isnull=True, virtual_key__isnull=True)
        )


class TeamBudgetInline(BudgetInline):
    fk_name = "team"


class ProjectBudgetInline(BudgetInline):
    fk_name = "project"


class KeyBudgetInline(BudgetInline):
    fk_name = "virtual_key"


@admin.register(Budget)
class BudgetAdmin(ServiceModelAdmin[Budget]):
    form = BudgetForm
    list_display = (
        "scope",
        "organization",
        "amount",
        "period",
        "models",
        "providers",
        "when_exhausted",
        "alerts",
    )
    list_filter = ("period", "on_exhaust", "organization")
    list_select_related = (
        "organization",
        "team__organization",  # Budget.__str__ names the owner with its organization
        "project__organization",
        "virtual_key",
        "virtual_key__parent",
    )
    search_fields = (
        "organization__name",
        "team__name",
        "project__name",
        "virtual_key__name",
        "virtual_key__owner",
        "downgrade_model",
    )
    autocomplete_fields = ("organization", "team", "project", "virtual_key")
    fieldsets = (
        (
            "Owner",
            {
                "fields": ("organization", "team", "project", "virtual_key"),
                "description": "Set one of team, project or key; none of them makes an "
                "organization-wide budget.",
            },
        ),
        ("Limit", {"fields": ("amount_usd", "period", "model_patterns", "provider_names")}),
        ("When it runs out", {"fields": ("on_exhaust", "downgrade_model", "alert_thresholds")}),
    )

    def save_model(self, request: HttpRequest, obj: Budget, form: Any, change: Any) -> None:
        save_budget(request, obj, actor=actor_for(request))

    @admin.display(description="scope")
    def scope(self, obj: Budget) -> str:
        return f"{obj.scope} {owner_name(obj)}"

    @admin.display(description="amount", ordering="amount_micros")
    def amount(self, obj: Budget) -> str:
        return format_usd(obj.amount_micros)

    @admin.display(description="models")
    def models(self, obj: Budget) -> str:
        return ", ".join(obj.model_patterns) or "all"

    @admin.display(description="providers")
    def providers(self, obj: Budget) -> str:
        return ", ".join(obj.provider_names) or "all"

    @admin.display(description="on exhaust", ordering="on_exhaust")
    def when_exhausted(self, obj: Budget) -> str:
        return exhaust_label(obj)

    @admin.display(description="alerts at")
    def alerts(self, obj: Budget) -> str:
        return ", ".join(f"{threshold}%" for threshold in obj.alert_thresholds)
