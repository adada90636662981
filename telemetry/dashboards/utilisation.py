"""How much of each budget its current period has used, and when it runs out at the recent rate.

Spend comes from the budget's BudgetPeriodRecord for the current period (kept up to date from
the ledger by the period job every few minutes) plus one ledger aggregate over the rows since
that record was written, so the figure is live without summing a whole month of ledger rows;
it is the figure the budget's counter is seeded from (telemetry.ledger.spend_micros: routed
model, sub-keys included), so it matches enforcement. A budget with no record yet (the job has
not run since it was created) is measured from rollups when its conditions are rollup
dimensions, and from the ledger otherwise.

Forecasts use the last 7 days through the current hour (rollups plus the ledger rows not rolled
up yet), read for all budgets at once.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from django.db.models import Q
from django.utils import timezone

from governance import periods
from governance.models import Budget, VirtualKey
from telemetry import forecasts, ledger, rollups
from telemetry.models import BudgetPeriodRecord

# The same window as the burn-rate alerts (telemetry/alerts.py), so the dashboard's date and an
# alert's date agree.
FORECAST_WINDOW = dt.timedelta(days=7)
WARN_PERCENT = 80
# A lifetime budget has no period end; beyond this a forecast date means little.
LIFETIME_HORIZON = dt.timedelta(days=366)


@dataclass(frozen=True, slots=True)
class BudgetUse:
    budget: Budget
    period: periods.PeriodWindow
    spent_micros: int
    measured_at: dt.datetime
    # "record": the period record (as of `record_at`) plus the ledger since; "rollups"; "ledger".
    source: str = "ledger"
    record_at: dt.datetime | None = None
    recent_micros: int | None = None  # spend in the last FORECAST_WINDOW (forecasts only)
    exhaustion_at: dt.datetime | None = None

    @property
    def limit_micros(self) -> int:
        return self.budget.amount_micros

    @property
    def remaining_micros(self) -> int:
        return max(self.limit_micros - self.spent_micros, 0)

    @property
    def percent(self) -> int:
        """Whole percent used, rounded down; may exceed 100. A $0 budget is always full."""
        if self.limit_micros <= 0:
            return 100
        return self.spent_micros * 100 // self.limit_micros

    @property
    def bar_percent(self) -> int:
        return min(self.percent, 100)

    @property
    def level(self) -> str:
        if self.percent >= 100:
            return "over"
        return "warn" if self.percent >= WARN_PERCENT else "ok"

    @property
    def exhausted(self) -> bool:
        return self.spent_micros >= self.limit_micros

    @property
    def daily_rate_micros(self) -> int | None:
        if self.recent_micros is None:
            return None
        return self.recent_micros // FORECAST_WINDOW.days

    @property
    def projected_micros(self) -> int | None:
        """Spend at the period's end if the recent rate holds (None for lifetime budgets)."""
        if self.recent_micros is None or self.period.end is None:
            return None
        left = max(int((self.period.end - self.measured_at).total_seconds()), 0)
        window = int(FORECAST_WINDOW.total_seconds())
        return self.spent_micros + self.recent_micros * left // window


def owner_id(budget: Budget) -> int:
    return int(
        budget.virtual_key_id or budget.team_id or budget.project_id or budget.organization_id
    )


def _ledger_spend(budget: Budget, start: dt.datetime | None, end: dt.datetime | None) -> int:
    return ledger.spend_micros(
        scope=budget.scope,
        owner_id=owner_id(budget),
        start=start,
        end=end,
        model_patterns=tuple(budget.model_patterns),
        provider_names=tuple(budget.provider_names),
    )


def budget_use(
    budgets: Sequence[Budget], *, now: dt.datetime | None = None
) -> dict[int, BudgetUse]:
    """Current-period use of each budget (select_related("organization") for the time zone).

    One query for the period records; then one ledger aggregate per budget that has a record
    (the rows since it), rollups for the others (one read per organization, period and kind of
    owner, whatever the number of budgets), and the ledger for budgets rollups cannot measure.
    """
    now = now or timezone.now()
    windows = {b.pk: periods.window(b.period, b.organization.timezone, now) for b in budgets}
    records = {
        (record.budget_id, record.period_label): record
        for record in BudgetPeriodRecord.objects.filter(
            budget_id__in=list(windows), period_label__in={w.label for w in windows.values()}
        )
    }
    from_rollups = _RollupSpend(budgets)
    uses = {}
    for budget in budgets:
        window = windows[budget.pk]
        record = records.get((budget.pk, window.label))
        if record is not None:
            since = record.updated_at
            if window.start is not None:
                since = max(since, window.start)
            spent = record.spent_micros + _ledger_spend(budget, since, window.end)
            uses[budget.pk] = BudgetUse(budget, window, spent, now, "record", record.updated_at)
            continue
        rolled = from_rollups.spend(budget, window)
        if rolled is not None:
            uses[budget.pk] = BudgetUse(budget, window, rolled, now, "rollups")
        else:
            spent = _ledger_spend(budget, window.start, window.end)
            uses[budget.pk] = BudgetUse(budget, window, spent, now, "ledger")
    return uses


class _RollupSpend:
    """Budget spend from rollups plus the rows not rolled up yet (telemetry.rollups.totals).

    Only for budgets whose every condition is a rollup dimension: an owner and a calendar
    period. Model tiers are left to the ledger, whose routed model is what the budget's counter
    matches (rollups keep the served model). Windows are whole hours in rollups, which only
    matters for zones with a half-hour offset.
    """

    OWNER_GROUP = {"organization": None, "team": "team", "project": "project", "key": "key"}

    def __init__(self, budgets: Sequence[Budget]) -> None:
        self._totals: dict[tuple[Any, ...], dict[Any, int]] = {}
        self._family: dict[int, set[int]] | None = None
        self._key_budgets = [b.virtual_key_id for b in budgets if b.virtual_key_id is not None]

    def spend(self, budget: Budget, window: periods.PeriodWindow) -> int | None:
        if budget.model_patterns or budget.provider_names:
            return None
        if window.start is None or window.end is None:
            return None  # lifetime: a period record, or the ledger
        group_by = self.OWNER_GROUP[budget.scope]
        costs = self._costs(budget.organization_id, window.start, window.end, group_by)
        if group_by is None:
            return costs.get(None, 0)
        if budget.virtual_key_id is not None:
            family = self._families().get(budget.virtual_key_id, {budget.virtual_key_id})
            return sum(costs.get(pk, 0) for pk in family)
        return costs.get(owner_id(budget), 0)

    def _costs(
        self, organization_id: int, start: dt.datetime, end: dt.datetime, group_by: str | None
    ) -> dict[Any, int]:
        cache_key = (organization_id, start, end, group_by)
        if cache_key not in self._totals:
            groups = rollups.totals(organization_id, start, end, group_by=group_by)
            self._totals[cache_key] = {g.group: g.cost_micros for g in groups}
        return self._totals[cache_key]

    def _families(self) -> dict[int, set[int]]:
        if self._family is None:
            self._family = _sub_keys(self._key_budgets)
        return self._family


def with_forecasts(uses: Mapping[int, BudgetUse]) -> dict[int, BudgetUse]:
    """The same uses with the 7-day spend and the forecast exhaustion time filled in.

    The last 7 days, through the current hour, are read for all the budgets' organizations in
    one read (telemetry.rollups.recent_costs: rollup cells plus the ledger rows not rolled up
    yet), grouped by dimension; each budget then picks its cells in Python. The window is the
    whole hours of the last 7 days and the current hour so far, the same as the burn-rate
    alerts' but for the part of an hour a week ago. The model is the served model there (the
    ledger's routed model is not a rollup dimension of these reads), which is close enough for a
    rate.
    """
    if not uses:
        return {}
    now = max(use.measured_at for use in uses.values())
    organization_ids = {use.budget.organization_id for use in uses.values()}
    cells = list(rollups.recent_costs(organization_ids, now - FORECAST_WINDOW, now).items())
    sub_keys = _sub_keys({use.budget.virtual_key_id for use in uses.values()} - {None})
    index = _index_cells(cells)
    result = {}
    for pk, use in uses.items():
        candidates = _candidates(use.budget, index, sub_keys)
        recent = sum(cost for cell, cost in candidates if _cell_matches(use.budget, cell, sub_keys))
        result[pk] = replace(use, recent_micros=recent, exhaustion_at=_exhaustion(use, recent))
    return result


Cell = rollups.RateCell  # org, team, project, key, model, provider


CellIndex = dict[tuple[str, int, int], list[tuple[Cell, int]]]


def _index_cells(cells: Iterable[tuple[Cell, int]]) -> CellIndex:
    """Cells by (dimension, organization, owner id): a budget then scans only its owner's cells
    instead of every cell of the week (a month dashboard with a hundred budgets spent a third of
    its time there)."""
    index: CellIndex = defaultdict(list)
    for entry in cells:
        org, team, project, key, _, _ = entry[0]
        index[("org", org, 0)].append(entry)
        index[("team", org, team)].append(entry)
        index[("project", org, project)].append(entry)
        index[("key", org, key)].append(entry)
    return index


def _candidates(
    budget: Budget, index: CellIndex, sub_keys: Mapping[int, set[int]]
) -> list[tuple[Cell, int]]:
    org = budget.organization_id
    if budget.virtual_key_id is not None:
        family = sub_keys.get(budget.virtual_key_id, {budget.virtual_key_id})
        return [entry for key in family for entry in index.get(("key", org, key), [])]
    if budget.team_id is not None:
        return index.get(("team", org, budget.team_id), [])
    if budget.project_id is not None:
        return index.get(("project", org, budget.project_id), [])
    return index.get(("org", org, 0), [])


@functools.lru_cache(maxsize=1024)
def _model_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(ledger.pattern_regex(pattern))


def _sub_keys(parent_ids: Iterable[int | None]) -> dict[int, set[int]]:
    """Each key budget covers its key's sub-keys too (as the ledger's parent_key_id does)."""
    family: dict[int, set[int]] = defaultdict(set)
    ids = [pk for pk in parent_ids if pk is not None]
    for pk in ids:
        family[pk].add(pk)
    for pk, parent in VirtualKey.objects.filter(parent_id__in=ids).values_list("pk", "parent_id"):
        if parent is not None:
            family[parent].add(pk)
    return family


def _cell_matches(budget: Budget, cell: Cell, sub_keys: Mapping[int, set[int]]) -> bool:
    org, team, project, key, model, provider = cell
    if org != budget.organization_id:
        return False
    if budget.team_id is not None and team != budget.team_id:
        return False
    if budget.project_id is not None and project != budget.project_id:
        return False
    if budget.virtual_key_id is not None and key not in sub_keys[budget.virtual_key_id]:
        return False
    if budget.provider_names and provider not in budget.provider_names:
        return False
    if rollups.tool_of(model) is not None:
        model = ""  # a tool call is governed with no model (a ledger row's routed model "")
    return not budget.model_patterns or any(
        _model_pattern(pattern).match(model) for pattern in budget.model_patterns
    )


def _exhaustion(use: BudgetUse, recent: int) -> dt.datetime | None:
    """When the budget runs out at the recent rate, if before its period ends (or at once)."""
    remaining = use.limit_micros - use.spent_micros
    if remaining <= 0:
        return use.measured_at
    return forecasts.exhaustion_at(
        now=use.measured_at,
        remaining_micros=remaining,
        window_spent_micros=recent,
        window=FORECAST_WINDOW,
        horizon=use.period.end or use.measured_at + LIFETIME_HORIZON,
    )


def budgets_of(
    *, teams: Iterable[int] = (), keys: Iterable[int] = (), organization: int | None = None
) -> list[Budget]:
    """Budgets owned by these teams or keys, or all budgets of an organization, in one query."""
    rows = Budget.objects.select_related(
        "organization", "team", "project", "virtual_key", "virtual_key__parent"
    )
    if organization is not None:
        rows = rows.filter(organization_id=organization)
    else:
        rows = rows.filter(Q(team_id__in=list(teams)) | Q(virtual_key_id__in=list(keys)))
    return list(rows.order_by("organization__name", "id"))
