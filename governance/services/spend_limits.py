"""Writes behind the Anthropic-compatible spend-limit routes: create-or-replace a budget on
(scope, period), and delete one. Audited, and seen by gateways on commit, like every write
(governance/services/common.py)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from governance import spend_limits
from governance.actors import Actor
from governance.models import Budget, Organization, Project, Team, VirtualKey
from governance.services import budgets, common


@dataclass(frozen=True, slots=True)
class SetResult:
    budget: Budget
    created: bool


def _lock(owner: spend_limits.Owner) -> None:
    """Two upserts of one (scope, period) at once must not both create a budget: each locks
    the owner's row first, so the second finds the first's budget."""
    model = type(owner)
    assert model in (Organization, Team, Project, VirtualKey)
    list(model._default_manager.select_for_update().filter(pk=owner.pk).values_list("pk"))


def set_spend_limit(
    *,
    actor: Actor,
    owner: spend_limits.Owner,
    period: str,
    amount_micros: int | None,
    within_team_ceiling: bool = False,
    note: str = "",
) -> SetResult:
    """Create or replace the budget of `owner` with `period` (the oldest plain one).

    `amount_micros` None makes it enforce nothing: it only alerts, keeping its amount (a new
    one gets $0 and no alert thresholds). An amount switches an alert-only budget back to
    blocking; a downgrade budget keeps downgrading.
    """
    with transaction.atomic():
        _lock(owner)
        budget = next(
            spend_limits.spend_limits_among(
                spend_limits.matching(owner, period).select_for_update()
            ),
            None,
        )
        created = budget is None
        if budget is None:
            budget = Budget(period=period, amount_micros=0, **spend_limits.owner_fields(owner))
            if amount_micros is None:
                budget.alert_thresholds = []
        if amount_micros is None:
            budget.on_exhaust = Budget.OnExhaust.ALERT
            budget.downgrade_model = ""
        else:
            budget.amount_micros = amount_micros
            if budget.on_exhaust == Budget.OnExhaust.ALERT:
                budget.on_exhaust = Budget.OnExhaust.BLOCK
        if within_team_ceiling:
            budgets.check_team_ceiling(budget)
        common.save_instance(budget, actor=actor, note=note)
    return SetResult(budget=budget, created=created)


def delete_spend_limit(*, actor: Actor, budget: Budget, note: str = "") -> None:
    common.delete_instance(budget, actor=actor, note=note)
