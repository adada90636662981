"""Budgets: audited writes, and the team ceiling that team leads' key budgets stay within."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from governance.actors import Actor
from governance.models import Budget
from governance.money import format_usd
from governance.services import common


def team_ceiling(budget: Budget) -> Budget | None:
    """The lowest budget of the key's team that covers `budget`: the same period, with no
    model or provider filter or with the same ones. None when `budget` is not a key's budget,
    or its key's team has no such budget."""
    key = budget.virtual_key
    if key is None or key.team_id is None:
        return None
    filters = (budget.model_patterns, budget.provider_names)
    candidates = Budget.objects.filter(team_id=key.team_id, period=budget.period)
    # JSON equality is not portable across databases: the team's few rows are compared here.
    covering = [
        row for row in candidates if (row.model_patterns, row.provider_names) in (filters, ([], []))
    ]
    return min(covering, key=lambda row: row.amount_micros, default=None)


def check_team_ceiling(budget: Budget) -> None:
    """Refuse a key budget above its team's budget of the same period: a team lead shares out
    the team's ceiling among its keys, and cannot raise it this way."""
    ceiling = team_ceiling(budget)
    if ceiling is not None and budget.amount_micros > ceiling.amount_micros:
        raise ValidationError(
            {
                "amount_micros": (
                    f"above the team's {ceiling.period} budget of "
                    f"{format_usd(ceiling.amount_micros)}: a key budget stays within its "
                    "team's ceiling"
                )
            }
        )


def save_budget(*, actor: Actor, budget: Budget, within_team_ceiling: bool = False) -> bool:
    """Validate and save a budget, audited. With `within_team_ceiling` (a team lead's change),
    a key budget may not exceed its team's budget of the same period. Returns whether it wrote.
    """
    with transaction.atomic():
        if within_team_ceiling:
            check_team_ceiling(budget)
        return common.save_instance(budget, actor=actor)
