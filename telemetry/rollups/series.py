"""Spend series, breakdowns and totals for the dashboards: rollup cells plus the ledger rows
above the watermark (not rolled up yet), read as of one moment.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models.functions import TruncHour
from django.utils import timezone

from telemetry.models import SpendRollup, UsageRecord
from telemetry.rollups.common import (
    COUNTS,
    DIMENSIONS,
    GROUPS,
    LEDGER_DIMENSION,
    UTC,
    Row,
    Totals,
    ceil_hour,
    counts_of,
    floor_hour,
    ledger_counts,
    ledger_dimensions,
    read_consistently,
)
from telemetry.rollups.plans import Plan, day_rows, hour_rows, plan_cells, series_plan, total_plan


@dataclass
class SeriesPoint(Totals):
    bucket: dt.datetime = field(default_factory=timezone.now)  # start, in the requested zone
    group: int | str | None = None


@dataclass
class GroupTotal(Totals):
    group: int | str | None = None


def _check_group(group_by: str | None) -> str | None:
    if group_by is None:
        return None
    if group_by not in GROUPS:
        raise ValueError(f"cannot group by {group_by!r}; choose one of {sorted(GROUPS)}")
    return GROUPS[group_by]


def _ledger_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    found = {}
    for name, value in filters.items():
        column, _, lookup = name.partition("__")
        found[LEDGER_DIMENSION[column] + (f"__{lookup}" if lookup else "")] = value
    return found


def _partial_cells(
    cursor: int,
    organization_id: int,
    *,
    start: dt.datetime,
    end: dt.datetime,
    fields: Sequence[str],
    filters: Mapping[str, Any],
) -> Iterator[tuple[dt.datetime, Row, list[int]]]:
    """(UTC hour, row of `fields`, counts) from the ledger rows not rolled up yet (ids above
    the cursor). The row's keys are the rollup field names."""
    names = {LEDGER_DIMENSION[name]: name for name in fields}
    rows = (
        UsageRecord.objects.filter(
            id__gt=cursor,
            organization_id=organization_id,
            created_at__gte=start,
            created_at__lt=end,
        )
        .annotate(bucket=TruncHour("created_at", tzinfo=UTC), **ledger_dimensions())
        .filter(**_ledger_filters(filters))
        .values("bucket", *names)
        .annotate(**ledger_counts())
        .order_by()
    )
    for row in rows:
        yield row["bucket"], {names[k]: row[k] for k in names}, counts_of(row)


def _check_filters(filters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Filters by dimension: {"team": 3}, or a collection with `__in`: {"team__in": [3, 4]}."""
    checked = {}
    for name, value in (filters or {}).items():
        dimension, _, lookup = name.partition("__")
        column = GROUPS.get(dimension, dimension)
        if column not in DIMENSIONS or lookup not in ("", "in"):
            raise ValueError(f"cannot filter on {name!r}")
        checked[f"{column}__in" if lookup else column] = list(value) if lookup else value
    return checked


def spend_series(
    organization_id: int,
    start: dt.datetime,
    end: dt.datetime,
    *,
    group_by: str | None = None,
    granularity: str = "day",
    tz: str = "UTC",
    filters: Mapping[str, Any] | None = None,
) -> list[SeriesPoint]:
    """Spend, tokens and requests per hour or day (in `tz`) and per group, ordered by time.

    `start` and `end` are widened to whole hours. `filters` narrow by dimension, e.g.
    {"team": 3} or {"team__in": [3, 4]}. Days in a zone whose offset is not whole hours are
    approximate by the offset's minutes (cells are whole UTC hours).
    """
    groups = [group_by] if group_by is not None else []
    key = group_by or ""
    return spend_breakdown(
        organization_id,
        start,
        end,
        group_bys=groups,
        granularity=granularity,
        tz=tz,
        filters=filters,
    )[key]


def spend_breakdown(
    organization_id: int,
    start: dt.datetime,
    end: dt.datetime,
    *,
    group_bys: Sequence[str],
    granularity: str = "day",
    tz: str = "UTC",
    filters: Mapping[str, Any] | None = None,
) -> dict[str, list[SeriesPoint]]:
    """spend_series for several group-bys at once, from one read of the cells: a page with a
    chart per dimension reads the rollups once. Keyed by group-by ("" for no group-by, when
    `group_bys` is empty)."""
    if granularity not in ("hour", "day"):
        raise ValueError("granularity is 'hour' or 'day'")
    columns = {name: _check_group(name) for name in group_bys} or {"": None}
    fields = [column for column in columns.values() if column]
    checked = _check_filters(filters)
    zone = zoneinfo.ZoneInfo(tz)
    low, high = floor_hour(start), ceil_hour(end)

    def bucket_of(hour: dt.datetime) -> dt.datetime:
        local = hour.astimezone(zone)
        if granularity == "day":
            # ZoneInfo derives the offset from the wall time, so this is the local midnight.
            local = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return local

    plan = series_plan(low, high, bucket_of) if low < high else Plan()

    def read(cursor: int) -> list[tuple[Any, Row, list[int]]]:
        cells = list(plan_cells(organization_id, plan, fields, checked))
        partial = _partial_cells(
            cursor, organization_id, start=low, end=high, fields=fields, filters=checked
        )
        cells += ((bucket_of(hour), row, counts) for hour, row, counts in partial)
        return cells

    # Per group-by: (UTC instant, group) -> (bucket, summed counts). By UTC instant: the local
    # times of the hour repeated when daylight saving time ends are equal to Python.
    sums: dict[str, dict[tuple[dt.datetime, Any], tuple[dt.datetime, list[int]]]]
    sums = {name: {} for name in columns}
    for bucket, row, counts in read_consistently(read):
        instant = bucket.astimezone(UTC)
        for name, column in columns.items():
            key = (instant, row[column] if column else None)
            found = sums[name].get(key)
            if found is None:
                sums[name][key] = (bucket, list(counts))
            else:
                total = found[1]
                for i, value in enumerate(counts):
                    total[i] += value
    return {
        name: [
            _point(bucket, group, counts)
            for (_, group), (bucket, counts) in sorted(
                series.items(), key=lambda item: (item[0][0], str(item[0][1]))
            )
            # A point whose hours were all taken off a day cell nets to no requests: no point.
            if counts[0]
        ]
        for name, series in sums.items()
    }


def _point(bucket: dt.datetime, group: Any, counts: Sequence[int]) -> SeriesPoint:
    return SeriesPoint(bucket=bucket, group=group, **dict(zip(COUNTS, counts, strict=True)))


def totals(
    organization_id: int,
    start: dt.datetime,
    end: dt.datetime,
    *,
    group_by: str | None = None,
    filters: Mapping[str, Any] | None = None,
) -> list[GroupTotal]:
    """Totals per group over [start, end) (widened to whole hours), most expensive first."""
    group_field = _check_group(group_by)
    fields = [group_field] if group_field else []
    checked = _check_filters(filters)
    low, high = floor_hour(start), ceil_hour(end)
    days, hours = total_plan(low, high)

    def read(cursor: int) -> list[tuple[Row, list[int]]]:
        cells = SpendRollup.objects.filter(organization_id=organization_id, **checked)
        rows = [(row, counts_of(row)) for row in day_rows(cells, days, fields)]
        rows += [(row, counts_of(row)) for row in hour_rows(cells, hours, fields)]
        partial = _partial_cells(
            cursor, organization_id, start=low, end=high, fields=fields, filters=checked
        )
        rows += [(row, counts) for _, row, counts in partial]
        return rows

    groups: dict[Any, GroupTotal] = {}
    for row, counts in read_consistently(read):
        group = row[group_field] if group_field else None
        groups.setdefault(group, GroupTotal(group=group)).add(counts)
    return sorted(groups.values(), key=lambda g: (-g.cost_micros, -g.requests, str(g.group)))


def top_keys(
    organization_id: int,
    start: dt.datetime,
    end: dt.datetime,
    *,
    limit: int = 10,
    filters: Mapping[str, Any] | None = None,
) -> list[GroupTotal]:
    """The keys that spent most in [start, end); `group` is the key id."""
    return totals(organization_id, start, end, group_by="key", filters=filters)[:limit]
