"""Report tables: spend and usage grouped by any set of dimensions at once (team and model, key
and provider, ...), per hour, per day or over the whole range, and Claude Code sessions per day.

Read like the dashboards' series (series.py): rollup cells for the whole UTC days and hours of the
range plus the ledger rows not rolled up yet, as of one moment. Filters take collections
(`{"team": [3, 4]}`), so a team lead's report reads only their teams' cells.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncDate, TruncHour

from telemetry.models import SessionRollup, UsageRecord
from telemetry.rollups.common import (
    COUNTS,
    DAY,
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
from telemetry.rollups.plans import Plan, plan_cells, series_plan

Filters = Mapping[str, Collection[Any]]
# What a session line is grouped by, as SessionRollup fields.
SESSION_GROUPS = {
    "day": "day",
    "session": "session_id",
    "key": "key_id",
    "team": "team_id",
    "organization": "organization_id",
}
SESSION_COUNTS = COUNTS[:1] + COUNTS[2:]  # session lines have no error count
_WHOLE_RANGE = "all"  # the one bucket of a table without time buckets


@dataclass
class TableRow(Totals):
    """One line of a report: a time bucket (None without buckets) and the values of the
    grouped dimensions, in the order asked for."""

    bucket: dt.datetime | dt.date | None = None
    groups: tuple[Any, ...] = field(default_factory=tuple)


def _columns(names: Sequence[str], allowed: Mapping[str, str]) -> list[str]:
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise ValueError(f"cannot group or filter by {unknown[0]!r}; choose from {sorted(allowed)}")
    return [allowed[name] for name in names]


def _cell_filters(filters: Filters | None) -> dict[str, list[Any]]:
    names = list((filters or {}).keys())
    columns = _columns(names, GROUPS)
    return {
        f"{column}__in": list((filters or {})[name])
        for name, column in zip(names, columns, strict=True)
    }


def spend_table(
    organization_id: int,
    start: dt.datetime,
    end: dt.datetime,
    *,
    dimensions: Sequence[str] = (),
    granularity: str | None = None,
    tz: str = "UTC",
    filters: Filters | None = None,
) -> list[TableRow]:
    """Counts per (bucket, dimensions) over [start, end) widened to whole UTC hours.

    `dimensions` and the keys of `filters` are rollup groups (telemetry.rollups.GROUPS:
    organization, team, project, key, model, provider). `granularity` is "hour", "day" (local
    days of `tz`) or None for one total per group over the range. Rows come in time order, then
    by group; groups whose requests net to zero are left out.
    """
    if granularity not in (None, "hour", "day"):
        raise ValueError("granularity is 'hour', 'day' or None")
    fields = _columns(dimensions, GROUPS)
    cell_filters = _cell_filters(filters)
    zone = zoneinfo.ZoneInfo(tz)
    low, high = floor_hour(start), ceil_hour(end)
    bucket_of = _bucketing(granularity, zone)
    plan = series_plan(low, high, bucket_of) if low < high else Plan()

    def read(cursor: int) -> list[tuple[Any, Row, list[int]]]:
        cells = list(plan_cells(organization_id, plan, fields, cell_filters))
        tail = _tail(
            cursor, organization_id, low=low, high=high, fields=fields, filters=cell_filters
        )
        cells += ((bucket_of(hour), row, counts) for hour, row, counts in tail)
        return cells

    sums: dict[tuple[Any, ...], tuple[Any, list[int]]] = {}
    for bucket, row, counts in read_consistently(read):
        # By UTC instant: the two 01:00s of the night daylight saving time ends are equal.
        instant = bucket.astimezone(UTC) if isinstance(bucket, dt.datetime) else bucket
        key = (instant, *(row[column] for column in fields))
        found = sums.get(key)
        if found is None:
            sums[key] = (bucket, list(counts))
        else:
            for i, value in enumerate(counts):
                found[1][i] += value
    ordered = sorted(sums.items(), key=lambda item: tuple(map(_order, item[0])))
    return [
        TableRow(
            bucket=None if bucket == _WHOLE_RANGE else bucket,
            groups=key[1:],
            **dict(zip(COUNTS, counts, strict=True)),
        )
        for key, (bucket, counts) in ordered
        if counts[0]  # hours taken off a day cell net to nothing: no row
    ]


def _order(value: Any) -> tuple[int, str]:
    """Sorts None, then numbers (as numbers), then text and times."""
    if value is None:
        return (0, "")
    if isinstance(value, int):
        return (1, f"{value:+021d}")
    if isinstance(value, dt.datetime | dt.date):
        return (2, value.isoformat())
    return (3, str(value))


def _bucketing(granularity: str | None, zone: zoneinfo.ZoneInfo) -> Callable[[dt.datetime], Any]:
    def bucket_of(hour: dt.datetime) -> Any:
        if granularity is None:
            return _WHOLE_RANGE
        local = hour.astimezone(zone)
        if granularity == "day":
            # ZoneInfo derives the offset from the wall time, so this is the local midnight.
            local = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return local

    return bucket_of


def _tail(
    cursor: int,
    organization_id: int,
    *,
    low: dt.datetime,
    high: dt.datetime,
    fields: Sequence[str],
    filters: Mapping[str, Any],
) -> Iterator[tuple[dt.datetime, Row, list[int]]]:
    """(UTC hour, row of `fields`, counts) from the ledger rows above the watermark."""
    names = {LEDGER_DIMENSION[column]: column for column in fields}
    ledger_filters = {
        LEDGER_DIMENSION[lookup.removesuffix("__in")] + "__in": values
        for lookup, values in filters.items()
    }
    rows = (
        UsageRecord.objects.filter(
            id__gt=cursor, organization_id=organization_id, created_at__gte=low, created_at__lt=high
        )
        .annotate(bucket=TruncHour("created_at", tzinfo=UTC), **ledger_dimensions())
        .filter(**ledger_filters)
        .values("bucket", *names)
        .annotate(**ledger_counts())
        .order_by()
    )
    for row in rows:
        yield row["bucket"], {names[k]: row[k] for k in names}, counts_of(row)


# --- sessions ----------------------------------------------------------------------------------


def session_table(
    organization_id: int,
    first_day: dt.date,
    last_day: dt.date,
    *,
    dimensions: Sequence[str] = ("session",),
    filters: Filters | None = None,
) -> list[TableRow]:
    """Claude Code session lines on the UTC days [first_day, last_day], summed per
    `dimensions` (from day, session, key, team, organization; "day" becomes the row's bucket).

    Lines come from the daily session rollups plus the ledger rows not rolled up yet; filters
    take team and key ids. Most expensive first within each day.
    """
    if "session" not in dimensions:
        raise ValueError("a session table is grouped by session")
    per_day = "day" in dimensions
    grouped = [name for name in dimensions if name != "day"]
    fields = _columns(grouped, SESSION_GROUPS)
    names = list((filters or {}).keys())
    lookups = _columns(names, {"team": "team_id", "key": "key_id"})
    scoped = {f"{c}__in": list((filters or {})[n]) for n, c in zip(names, lookups, strict=True)}
    by_day = ["day"] if per_day else []

    def read(cursor: int) -> list[tuple[Any, Row, list[int]]]:
        lines: QuerySet[Any] = SessionRollup.objects.filter(
            organization_id=organization_id, day__gte=first_day, day__lte=last_day, **scoped
        )
        rows = (
            lines.values(*by_day, *fields)
            .annotate(**{"n_" + name: Sum(name) for name in SESSION_COUNTS})
            .order_by()
        )
        result = [(row["day"] if per_day else None, row, _session_counts(row)) for row in rows]
        result += _session_tail(
            cursor,
            organization_id,
            first_day=first_day,
            last_day=last_day,
            fields=fields,
            scoped=scoped,
            per_day=per_day,
        )
        return result

    sums: dict[tuple[Any, ...], list[int]] = {}
    for day, row, counts in read_consistently(read):
        key = (day, *(row[column] or (0 if column != "session_id" else "") for column in fields))
        total = sums.setdefault(key, [0] * len(COUNTS))
        for i, value in enumerate(counts):
            total[i] += value
    ordered = sorted(
        sums.items(), key=lambda item: (_order(item[0][0]), -item[1][-1], str(item[0][1:]))
    )
    return [
        TableRow(bucket=key[0], groups=key[1:], **dict(zip(COUNTS, counts, strict=True)))
        for key, counts in ordered
    ]


def _session_counts(row: Row) -> list[int]:
    return [int(row["n_" + name] or 0) if name != "errors" else 0 for name in COUNTS]


def _session_tail(
    cursor: int,
    organization_id: int,
    *,
    first_day: dt.date,
    last_day: dt.date,
    fields: Sequence[str],
    scoped: Mapping[str, Any],
    per_day: bool,
) -> list[tuple[Any, Row, list[int]]]:
    start = dt.datetime.combine(first_day, dt.time(0), tzinfo=UTC)
    end = dt.datetime.combine(last_day, dt.time(0), tzinfo=UTC) + DAY
    rows = (
        UsageRecord.objects.filter(
            id__gt=cursor,
            organization_id=organization_id,
            created_at__gte=start,
            created_at__lt=end,
            **scoped,
        )
        .exclude(session_id="")
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values(*(["day"] if per_day else []), *fields)
        .annotate(**ledger_counts())
        .order_by()
    )
    result = []
    for row in rows:
        counts = counts_of(row)
        counts[COUNTS.index("errors")] = 0  # as in the rollups: session lines count no errors
        result.append((row["day"] if per_day else None, row, counts))
    return result
