"""Budget gauges, computed when /metrics is scraped (and read by the Datadog export):
gateway_budget_spent_usd / _limit_usd / _remaining_usd {budget, organization, scope, owner,
period, models}, from the budget period records (telemetry/periods.py refreshes the current
period's spend from the ledger every few minutes): one query for budgets, one for records.
Key-scoped budgets are exported for the GATEWAY_METRICS_MAX_KEYS most spent only; organization,
team and project budgets always."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger("gateway.metrics")

BUDGET_LABELS = ("budget", "organization", "scope", "owner", "period", "models")


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    budget_id: int
    organization: str
    scope: str
    owner: str
    team: str  # the owning team's name, or the owning key's team's
    key: str  # the owning key's name
    period: str
    models: str  # model patterns, comma-separated ("" = every model)
    limit_micros: int
    spent_micros: int | None  # None until the period's record exists

    @property
    def remaining_micros(self) -> int | None:
        return None if self.spent_micros is None else max(self.limit_micros - self.spent_micros, 0)


def budget_statuses(
    now: dt.datetime | None = None, *, max_keys: int | None = None
) -> list[BudgetStatus]:
    """Every live budget's limit and spend in its current period (period records, no ledger)."""
    from django.db.models import Q

    from governance.models import Budget
    from governance.periods import window
    from telemetry.models import BudgetPeriodRecord

    now = now or timezone.now()
    live_key = Q(virtual_key__isnull=True) | Q(virtual_key__revoked_at__isnull=True)
    budgets = Budget.objects.filter(live_key).select_related(
        "organization", "team", "project", "virtual_key__team", "virtual_key__parent"
    )
    records = {
        (r.budget_id, r.period_label): r.spent_micros
        for r in BudgetPeriodRecord.objects.filter(closed=False).only(
            "budget_id", "period_label", "spent_micros"
        )
    }
    statuses = []
    for budget in budgets:
        label = window(budget.period, budget.organization.timezone, now).label
        statuses.append(_status(budget, records.get((budget.pk, label))))
    return _cap_key_budgets(
        statuses, settings.GATEWAY_METRICS_MAX_KEYS if max_keys is None else max_keys
    )


def _status(budget: Any, spent: int | None) -> BudgetStatus:
    key = budget.virtual_key
    team = budget.team or (key.team if key is not None else None)
    owner = key or budget.team or budget.project or budget.organization
    # Plain names: the organization is a label of its own (a team's str() would repeat it).
    owner_name = str(key) if key is not None else owner.name
    return BudgetStatus(
        budget_id=budget.pk,
        organization=budget.organization.name,
        scope=budget.scope,
        owner=owner_name,
        team=team.name if team is not None else "",
        key=str(key) if key is not None else "",
        period=budget.period,
        models=",".join(budget.model_patterns),
        limit_micros=budget.amount_micros,
        spent_micros=spent,
    )


def _cap_key_budgets(statuses: list[BudgetStatus], max_keys: int) -> list[BudgetStatus]:
    keyed = [s for s in statuses if s.scope == "key"]
    if len(keyed) <= max_keys:
        return statuses
    keep = {s.budget_id for s in sorted(keyed, key=lambda s: -(s.spent_micros or 0))[:max_keys]}
    return [s for s in statuses if s.scope != "key" or s.budget_id in keep]


class BudgetCollector(Collector):
    """Budget gauges, computed when scraped."""

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return self._families()  # no samples: registering must not query the database

    def collect(self) -> Iterable[GaugeMetricFamily]:
        spent, limit, remaining = families = self._families()
        try:
            statuses = budget_statuses()
        except Exception:  # a database outage must not take the request metrics down with it
            logger.warning("budget gauges unavailable", exc_info=True)
            return []
        for status in statuses:
            labels = [
                str(status.budget_id),
                status.organization,
                status.scope,
                status.owner,
                status.period,
                status.models,
            ]
            limit.add_metric(labels, status.limit_micros / 1_000_000)
            if status.spent_micros is not None and status.remaining_micros is not None:
                spent.add_metric(labels, status.spent_micros / 1_000_000)
                remaining.add_metric(labels, status.remaining_micros / 1_000_000)
        return families

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "gateway_budget_spent_usd", "Spend in the current period.", labels=BUDGET_LABELS
            ),
            GaugeMetricFamily("gateway_budget_limit_usd", "Budget amount.", labels=BUDGET_LABELS),
            GaugeMetricFamily(
                "gateway_budget_remaining_usd",
                "Limit minus spend, at least 0.",
                labels=BUDGET_LABELS,
            ),
        )
