"""Budget period history: one BudgetPeriodRecord per budget and calendar period.

`sync_budget_periods` (every 5 minutes) keeps the record of each budget's current period up to
date with the ledger spend (the truth; counters are a cache of it), and closes the records of
periods that are over, writing their final spend once:

- A period that ended is closed CLOSE_GRACE after its end, so that usage events still in a
  gateway's buffer or spool (they carry the request's own time) are counted in it.
- A budget whose amount changes keeps its current record; the record's limit follows the budget
  and its spend goes on.
- A budget whose period changes (month to week, say) has a record that no longer matches its
  current period: it is closed at once with what was spent from its start until now, and the
  record of the new period starts from the ledger spend in the new window (which is what the
  new period's counter is seeded from, so the two may overlap).
- A budget that was deleted has its open records closed with the spend last recorded.

Every write is a conditional UPDATE or an insert guarded by the unique (budget, period label)
constraint, so two workers running this at once write the same rows.

Spend is not summed from the raw ledger (a month of a busy organization is millions of rows, per
budget): it is read from the rollups, whole UTC days from day cells and the rest of the hours
from hour cells, plus the ledger rows not rolled up yet and the minutes at the ends of a period
that do not fill an hour (telemetry.rollups.budget_costs). That is the ledger sum exactly: cells
keep the routed model and the parent key that model tiers and key budgets match on. One read
per organization and window serves all of its budgets with that window. Retention keeps the
ledger rows of current periods, so the figure is also what counters are seeded from; for a
lifetime budget it also counts rows retention has deleted since (they stay in the rollups).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from governance import periods
from governance.models import Budget
from telemetry import ledger, rollups
from telemetry.models import BudgetPeriodRecord

logger = logging.getLogger("gateway.periods")

CLOSE_GRACE = dt.timedelta(minutes=10)


@dataclass
class PeriodSync:
    budgets: int = 0
    opened: int = 0
    closed: int = 0


def owner_id(budget: Budget) -> int:
    owner = budget.virtual_key_id or budget.team_id or budget.project_id
    return int(owner or budget.organization_id)


Window = tuple[dt.datetime | None, dt.datetime | None]


class SpendReader:
    """Budget spend in a window, from one rollup read per (organization, window) shared by every
    budget of the organization over that window."""

    def __init__(self) -> None:
        self._costs: dict[tuple[int, Window], dict[rollups.BudgetCell, int]] = {}

    def spend(self, budget: Budget, start: dt.datetime | None, end: dt.datetime | None) -> int:
        """Spend of `budget` in [start, end): the ledger figure its counter is seeded from
        (telemetry.ledger.spend_micros: routed model, sub-keys included)."""
        read = (budget.organization_id, (start, end))
        if read not in self._costs:
            self._costs[read] = rollups.budget_costs(budget.organization_id, start, end)
        matches = _matcher(budget)
        return sum(cost for cell, cost in self._costs[read].items() if matches(cell))


def _matcher(budget: Budget) -> Callable[[rollups.BudgetCell], bool]:
    """Whether a (team, project, key, parent key, routed model, provider) cell counts for the
    budget: the conditions of telemetry.ledger.spend_micros."""
    owner = owner_id(budget)
    scope = budget.scope
    patterns = [re.compile(ledger.pattern_regex(p)) for p in budget.model_patterns]
    providers = set(budget.provider_names)

    def matches(cell: rollups.BudgetCell) -> bool:
        team, project, key, parent, routed_model, provider = cell
        if scope == "key" and owner not in (key, parent):
            return False
        if (scope == "team" and team != owner) or (scope == "project" and project != owner):
            return False
        if providers and provider not in providers:
            return False
        return not patterns or any(p.search(routed_model) for p in patterns)

    return matches


def budget_spend(
    budget: Budget,
    start: dt.datetime | None,
    end: dt.datetime | None,
    reader: SpendReader | None = None,
) -> int:
    """Ledger spend of a budget in [start, end): the same figure its counter is seeded from.
    Pass a `reader` to share reads between budgets."""
    return (reader or SpendReader()).spend(budget, start, end)


def current_window(budget: Budget, now: dt.datetime) -> periods.PeriodWindow:
    return periods.window(budget.period, budget.organization.timezone, now)


def _budgets(budget_ids: Iterable[int] | None) -> QuerySet[Budget]:
    rows = Budget.objects.select_related("organization").order_by("id")
    return rows if budget_ids is None else rows.filter(id__in=list(budget_ids))


def sync_budget_periods(
    *, now: dt.datetime | None = None, budget_ids: Iterable[int] | None = None
) -> PeriodSync:
    """Bring every budget's period records up to date (or only those of `budget_ids`)."""
    now = now or timezone.now()
    result = PeriodSync()
    reader = SpendReader()
    for budget in _budgets(budget_ids):
        result.budgets += 1
        try:
            opened, closed = _sync_budget(budget, now, reader)
        except Exception:
            # One budget's failure (e.g. a bad pattern) must not stop the others' history.
            logger.exception("could not update the period record of budget %s", budget.pk)
            continue
        result.opened += opened
        result.closed += closed
    if budget_ids is None:
        result.closed += _close_deleted(now)
    return result


def _sync_budget(budget: Budget, now: dt.datetime, reader: SpendReader) -> tuple[int, int]:
    window = current_window(budget, now)
    opened = _update_current(budget, window, reader)
    closed = 0
    stale = BudgetPeriodRecord.objects.filter(budget_id=budget.pk, closed=False).exclude(
        period_label=window.label
    )
    for record in stale:
        closed += _close(budget, record, now, reader)
    return opened, closed


def _update_current(budget: Budget, window: periods.PeriodWindow, reader: SpendReader) -> int:
    spent = reader.spend(budget, window.start, window.end)
    values = {
        "period_start": window.start,
        "period_end": window.end,
        "limit_micros": budget.amount_micros,
        "spent_micros": spent,
        "closed": False,
    }
    try:
        with transaction.atomic():
            BudgetPeriodRecord.objects.create(
                budget_id=budget.pk, period_label=window.label, **values
            )
        return 1
    except IntegrityError:
        pass  # the record exists (or another worker just created it)
    # A closed record for the current label is reopened: the period was switched away from and
    # back within the same period, and its counter (same key) goes on counting.
    BudgetPeriodRecord.objects.filter(budget_id=budget.pk, period_label=window.label).update(
        **values, updated_at=timezone.now()
    )
    return 0


def _close(
    budget: Budget, record: BudgetPeriodRecord, now: dt.datetime, reader: SpendReader
) -> int:
    end = record.period_end
    if end is not None and end <= now:
        if now < end + CLOSE_GRACE:
            # Over, but late events may still arrive: keep it open and up to date.
            spent = reader.spend(budget, record.period_start, end)
            BudgetPeriodRecord.objects.filter(pk=record.pk, closed=False).update(
                spent_micros=spent, updated_at=timezone.now()
            )
            return 0
    else:
        end = now  # the budget's period changed: this period ends here
    spent = reader.spend(budget, record.period_start, end)
    return BudgetPeriodRecord.objects.filter(pk=record.pk, closed=False).update(
        spent_micros=spent, period_end=end, closed=True, updated_at=timezone.now()
    )


def _close_deleted(now: dt.datetime) -> int:
    orphans = BudgetPeriodRecord.objects.filter(closed=False).exclude(
        budget_id__in=Budget.objects.values("id")
    )
    closed = 0
    for record in orphans:
        end = record.period_end if record.period_end and record.period_end <= now else now
        closed += BudgetPeriodRecord.objects.filter(pk=record.pk, closed=False).update(
            period_end=end, closed=True, updated_at=timezone.now()
        )
    return closed
