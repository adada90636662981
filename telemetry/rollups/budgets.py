"""Budget spend from the rollups: what every budget of an organization needs over one window, in
one read (budget_costs, for telemetry.periods), and the recent spend burn-rate forecasts divide
(recent_costs, for telemetry.dashboards.utilisation).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection

from django.db.models import Q, Sum

from telemetry.models import SpendRollup, UsageRecord
from telemetry.rollups.common import (
    DIMENSIONS,
    HOUR,
    LEDGER_DIMENSION,
    Row,
    ceil_hour,
    floor_hour,
    ledger_dimensions,
    read_consistently,
)
from telemetry.rollups.plans import day_rows, hour_rows, total_plan

# What a budget matches on (telemetry.ledger.spend_micros), as rollup fields.
BUDGET_FIELDS = ("team_id", "project_id", "key_id", "parent_key_id", "routed_model", "provider")
BudgetCell = tuple[int, int, int, int, str, str]  # in BUDGET_FIELDS order


def budget_costs(
    organization_id: int, start: dt.datetime | None, end: dt.datetime | None
) -> dict[BudgetCell, int]:
    """Cost of an organization's requests in [start, end) (None: unbounded) per BUDGET_FIELDS:
    what every budget of the organization over that window needs, in one read.

    The whole hours come from the rollups, with whole UTC days from day cells; the rest from
    the ledger: the rows not rolled up yet, and the parts of an hour at the ends (a period
    in a zone with a half-hour offset starts mid-hour), so the figure equals the ledger sum
    for any boundaries. Rows that retention deleted stay counted in the rollups.
    """
    low = ceil_hour(start) if start is not None else None
    high = floor_hour(end) if end is not None else None
    if low is not None and high is not None and low > high:
        high = low  # within one hour: all from the ledger
    days, hours = total_plan(low, high)
    ledger = UsageRecord.objects.filter(organization_id=organization_id)
    if start is not None:
        ledger = ledger.filter(created_at__gte=start)
    if end is not None:
        ledger = ledger.filter(created_at__lt=end)

    def read(cursor: int) -> dict[BudgetCell, int]:
        costs: dict[BudgetCell, int] = defaultdict(int)
        cells = SpendRollup.objects.filter(organization_id=organization_id)
        for rows in (
            day_rows(cells, days, BUDGET_FIELDS),
            hour_rows(cells, hours, BUDGET_FIELDS),
        ):
            for row in rows:
                costs[_budget_cell(row)] += int(row["n_cost_micros"] or 0)
        beyond = Q(id__gt=cursor)
        if low is not None:
            beyond |= Q(created_at__lt=low)
        if high is not None:
            beyond |= Q(created_at__gte=high)
        rows = (
            ledger.filter(beyond).values(*BUDGET_FIELDS).annotate(n_cost_micros=Sum("cost_micros"))
        )
        for row in rows.order_by():
            costs[_budget_cell(row)] += int(row["n_cost_micros"] or 0)
        return costs

    return read_consistently(read)


def _budget_cell(row: Row) -> BudgetCell:
    return (
        int(row["team_id"] or 0),
        int(row["project_id"] or 0),
        int(row["key_id"] or 0),
        int(row["parent_key_id"] or 0),
        str(row["routed_model"]),
        str(row["provider"]),
    )


# What a burn-rate forecast reads: spend per owner, served model and provider.
RateCell = tuple[int, int, int, int, str, str]  # in DIMENSIONS order


def recent_costs(
    organization_ids: Collection[int], start: dt.datetime, end: dt.datetime
) -> dict[RateCell, int]:
    """Cost of several organizations' requests per DIMENSIONS, from the first whole UTC hour at
    or after `start` through the hour `end` falls in: what burn-rate forecasts over the last
    days need, in one read for every budget on a page.

    The current, incomplete hour counts: its cell as far as it is rolled up, and the ledger
    rows not rolled up yet (the tail above the watermark, found by id, so not a scan of the
    window's rows). Without it a budget whose only spend is in this hour would read as idle.
    Whole UTC days come from day cells and the hours at the ends from hour cells.
    """
    ids = list(organization_ids)
    low, high = ceil_hour(start), floor_hour(end) + HOUR
    days, hours = total_plan(low, high)
    cells = SpendRollup.objects.filter(organization_id__in=ids)
    dimensions = ledger_dimensions()

    def read(cursor: int) -> dict[RateCell, int]:
        costs: dict[RateCell, int] = defaultdict(int)
        for row in (*day_rows(cells, days, DIMENSIONS), *hour_rows(cells, hours, DIMENSIONS)):
            costs[_rate_cell(row)] += int(row["n_cost_micros"] or 0)
        tail = (
            UsageRecord.objects.filter(
                id__gt=cursor, organization_id__in=ids, created_at__gte=low, created_at__lt=high
            )
            .annotate(**dimensions)
            .values(*LEDGER_DIMENSION.values())
            .annotate(n_cost_micros=Sum("cost_micros"))
            .order_by()
        )
        for row in tail:
            cell = {name: row[column] for name, column in LEDGER_DIMENSION.items()}
            costs[_rate_cell(cell)] += int(row["n_cost_micros"] or 0)
        return costs

    return read_consistently(read)


def _rate_cell(row: Row) -> RateCell:
    return (
        int(row["organization_id"] or 0),
        int(row["team_id"] or 0),
        int(row["project_id"] or 0),
        int(row["key_id"] or 0),
        str(row["model"]),
        str(row["provider"]),
    )
