"""Hourly and daily rollups of the ledger, and the selectors dashboards read them through.

Writing (`run_rollups`, every minute): the ledger is read forward by id from a watermark
(RollupCursor "ledger"). The new rows are aggregated per hour and per (organization, team,
project, key, served model, provider) and *added* to the hour and day cells, and to one
SessionRollup line per (UTC day, session, key), in the same transaction that moves the watermark.
So a row is counted exactly once: a run that fails rolls back its additions together with the
watermark, and a second worker waits on the cursor row (select_for_update; SQLite serializes
writers) and then reads the watermark the first one left. A spooled replay arrives with an old
created_at but a new id, so it is picked up like any other row and lands in its own old hour.

Adding new rows rather than recomputing whole buckets keeps a run proportional to the new rows
(a busy hour holds millions), and stays right after retention has deleted the raw rows of an
old bucket that a late row then lands in.

Ids are handed out when a row is inserted but become visible when its transaction commits, so
a writer that commits late can leave a row below ids that are already visible. The watermark
therefore only advances to a *horizon*: the highest id that was visible at least
`settle_seconds` ago (RollupCursor "ledger.horizon", remembered between runs). Ledger writes are
sub-second transactions, so by then every row at or below the horizon is committed. Readers
lose nothing to this lag: the selectors add the rows above the watermark from the ledger.

Buckets are UTC hours and UTC days. Series in another time zone are built from hour cells.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar, cast

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Max, Min, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, NullIf, TruncDate, TruncHour
from django.utils import timezone

from governance.money import micros_to_usd
from telemetry.models import RollupCursor, SessionRollup, SpendRollup, UsageRecord

CURSOR = "ledger"
HORIZON = "ledger.horizon"
BATCH_ROWS = 50_000
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
UTC = dt.UTC

DIMENSIONS = ("organization_id", "team_id", "project_id", "key_id", "model", "provider")
COUNTS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_micros",
)
GROUPS = {
    "team": "team_id",
    "project": "project_id",
    "key": "key_id",
    "model": "model",
    "provider": "provider",
    "organization": "organization_id",
}

T = TypeVar("T")
Cell = tuple[Any, ...]  # (bucket, *DIMENSIONS)


# --- reading the ledger in rollup shape ------------------------------------------------------


def _ledger_dimensions() -> dict[str, Any]:
    """Ledger columns as rollup dimensions: NULL ids become 0, the model is the served one."""
    return {
        "d_org": Coalesce("organization_id", Value(0)),
        "d_team": Coalesce("team_id", Value(0)),
        "d_project": Coalesce("project_id", Value(0)),
        "d_key": Coalesce("key_id", Value(0)),
        "d_model": Coalesce(
            NullIf("served_model", Value("")),
            NullIf("routed_model", Value("")),
            "requested_model",
        ),
        "d_provider": F("provider"),
    }


LEDGER_DIMENSION = {
    "organization_id": "d_org",
    "team_id": "d_team",
    "project_id": "d_project",
    "key_id": "d_key",
    "model": "d_model",
    "provider": "d_provider",
}


def _ledger_counts() -> dict[str, Any]:
    return {
        "n_requests": Count("id"),
        "n_errors": Count("id", filter=Q(status__gte=400)),
        "n_input_tokens": Sum("input_tokens"),
        "n_output_tokens": Sum("output_tokens"),
        "n_cache_read_tokens": Sum("cache_read_tokens"),
        "n_cache_write_tokens": Sum(F("cache_write_5m_tokens") + F("cache_write_1h_tokens")),
        "n_cost_micros": Sum("cost_micros"),
    }


def _counts_of(row: Mapping[str, Any], prefix: str = "n_") -> list[int]:
    return [int(row[prefix + name] or 0) for name in COUNTS]


# --- writing ---------------------------------------------------------------------------------


@dataclass
class RollupRun:
    rows: int = 0
    batches: int = 0
    cursor: int = 0


def run_rollups(*, settle_seconds: float | None = None, batch_rows: int = BATCH_ROWS) -> RollupRun:
    """Roll the ledger up to the settled horizon. Idempotent; safe on several workers at once."""
    if settle_seconds is None:
        settle_seconds = settings.GATEWAY_ROLLUP_SETTLE_SECONDS
    _ensure_cursors()
    upper = _advance_horizon(settle_seconds)
    result = RollupRun()
    while True:
        rows, cursor = _roll_batch(upper, batch_rows)
        result.cursor = cursor
        if rows == 0:
            return result
        result.rows += rows
        result.batches += 1


def _ensure_cursors() -> None:
    # get_or_create outside the main transaction: it recovers from a concurrent insert of the
    # same name by reading the row the other worker created.
    RollupCursor.objects.get_or_create(name=CURSOR)
    RollupCursor.objects.get_or_create(name=HORIZON)


def _advance_horizon(settle_seconds: float) -> int:
    """The highest id that is safe to roll up now; remembers the current maximum for later."""
    with transaction.atomic():
        cursor = RollupCursor.objects.select_for_update().get(name=CURSOR)  # one at a time
        horizon = RollupCursor.objects.get(name=HORIZON)
        latest = UsageRecord.objects.aggregate(top=Max("id"))["top"] or 0
        if settle_seconds <= 0:
            return int(latest)
        settled = horizon.updated_at <= timezone.now() - dt.timedelta(seconds=settle_seconds)
        upper = horizon.last_usage_id if settled else cursor.last_usage_id
        # Start the clock on the current maximum once the previous horizon is used up.
        if latest > horizon.last_usage_id and (
            settled or horizon.last_usage_id <= cursor.last_usage_id
        ):
            horizon.last_usage_id = int(latest)
            horizon.save(update_fields=["last_usage_id", "updated_at"])
        return upper


def _roll_batch(upper: int, batch_rows: int) -> tuple[int, int]:
    """Roll up the next batch of rows at or below `upper`; returns (rows, new watermark)."""
    with transaction.atomic():
        cursor = RollupCursor.objects.select_for_update().get(name=CURSOR)
        start = cursor.last_usage_id
        if start >= upper:
            return 0, start
        end = _batch_end(start, upper, batch_rows)
        new_rows = UsageRecord.objects.filter(id__gt=start, id__lte=end)
        hours = list(
            new_rows.annotate(bucket=TruncHour("created_at", tzinfo=UTC), **_ledger_dimensions())
            .values("bucket", *LEDGER_DIMENSION.values())
            .annotate(**_ledger_counts())
            .order_by()
        )
        rows = sum(int(row["n_requests"]) for row in hours)
        hour_cells = {_cell(row): _counts_of(row) for row in hours}
        _add_spend(SpendRollup.Granularity.HOUR, hour_cells)
        _add_spend(SpendRollup.Granularity.DAY, _by_day(hour_cells))
        _add_sessions(new_rows)
        cursor.last_usage_id = end
        cursor.save(update_fields=["last_usage_id", "updated_at"])
        return rows, end


def _batch_end(start: int, upper: int, batch_rows: int) -> int:
    ids = UsageRecord.objects.filter(id__gt=start, id__lte=upper).order_by("id")
    last = ids.values_list("id", flat=True)[batch_rows - 1 : batch_rows]
    return int(last[0]) if last else upper


def _cell(row: Mapping[str, Any]) -> Cell:
    return (row["bucket"], *(row[LEDGER_DIMENSION[name]] for name in DIMENSIONS))


def _by_day(hour_cells: Mapping[Cell, list[int]]) -> dict[Cell, list[int]]:
    days: dict[Cell, list[int]] = {}
    for (bucket, *dims), counts in hour_cells.items():
        day = bucket.replace(hour=0)
        total = days.setdefault((day, *dims), [0] * len(COUNTS))
        for i, value in enumerate(counts):
            total[i] += value
    return days


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _column(model: type[Any], name: str) -> str:
    return _q(model._meta.get_field(name).column)


UPSERT_ROWS = 500  # rows per statement; below SQLite's 32,766 parameters for both tables


def _upsert(
    table: str, columns: Sequence[str], keys: int, updates: str, rows: Sequence[Sequence[Any]]
) -> None:
    """INSERT ... VALUES (...), (...) ON CONFLICT (the first `keys` columns) DO UPDATE SET
    `updates`, a few hundred rows per statement (one round trip per row is far slower).

    PostgreSQL and SQLite (3.24+) both accept it. Each row is a distinct cell, as one statement
    may not update a row twice. Identifiers come from model metadata and values are
    parameters, so nothing from outside reaches the SQL text.
    """
    names = ", ".join(columns)
    conflict = ", ".join(columns[:keys])
    one = "(" + ", ".join(["%s"] * len(columns)) + ")"
    with connection.cursor() as db:
        for offset in range(0, len(rows), UPSERT_ROWS):
            chunk = rows[offset : offset + UPSERT_ROWS]
            values = ", ".join([one] * len(chunk))
            sql = (
                f"INSERT INTO {table} ({names}) VALUES {values} "  # noqa: S608
                f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
            )
            db.execute(sql, [value for row in chunk for value in row])


def _add_spend(granularity: str, cells: Mapping[Cell, list[int]]) -> None:
    """Add counts to cells, creating the ones that do not exist (one upsert per cell)."""
    if not cells:
        return
    table = _q(SpendRollup._meta.db_table)
    keys = ["granularity", "bucket_start", *DIMENSIONS]
    columns = [_column(SpendRollup, name) for name in (*keys, *COUNTS)]
    updates = ", ".join(
        f"{_column(SpendRollup, name)} = {table}.{_column(SpendRollup, name)}"
        f" + excluded.{_column(SpendRollup, name)}"
        for name in COUNTS
    )
    adapt = connection.ops.adapt_datetimefield_value
    params = [
        [granularity, adapt(bucket), *dims, *counts] for (bucket, *dims), counts in cells.items()
    ]
    _upsert(table, columns, len(keys), updates, params)


def _add_sessions(new_rows: QuerySet[UsageRecord]) -> None:
    """Add the batch to its sessions' daily lines; subagents are counted from the ledger."""
    lines = cast(
        list[dict[str, Any]],
        list(
            new_rows.exclude(session_id="")
            .annotate(day=TruncDate("created_at", tzinfo=UTC))
            .values("day", "session_id", "key_id")
            .annotate(
                org=Max("organization_id"),
                team=Max("team_id"),
                first=Min("created_at"),
                last=Max("created_at"),
                **_ledger_counts(),
            )
            .order_by()
        ),
    )
    if not lines:
        return
    agents = _session_agents({(line["day"], line["session_id"]) for line in lines})
    table = _q(SessionRollup._meta.db_table)
    keys = ["day", "session_id", "key_id"]
    sums = [name for name in COUNTS if name != "errors"]
    names = [*keys, "organization_id", "team_id", *sums, "agents", "first_seen", "last_seen"]
    columns = [_column(SessionRollup, name) for name in names]
    col = {name: _column(SessionRollup, name) for name in names}
    updates = [f"{col[n]} = {table}.{col[n]} + excluded.{col[n]}" for n in sums]
    updates += [
        _pick(table, col["agents"], ">"),
        _pick(table, col["first_seen"], "<"),
        _pick(table, col["last_seen"], ">"),
    ]
    ops = connection.ops
    params = [
        [
            ops.adapt_datefield_value(line["day"]),
            line["session_id"],
            line["key_id"] or 0,
            line["org"] or 0,
            line["team"] or 0,
            *(int(line["n_" + name] or 0) for name in sums),
            agents.get((line["day"], line["session_id"], line["key_id"] or 0), 0),
            ops.adapt_datetimefield_value(line["first"]),
            ops.adapt_datetimefield_value(line["last"]),
        ]
        for line in lines
    ]
    _upsert(table, columns, len(keys), ", ".join(updates), params)


def _pick(table: str, column: str, better: str) -> str:
    """SET clause keeping the smaller or larger of the stored and the new value (portable
    LEAST/GREATEST: SQLite has neither)."""
    return (
        f"{column} = CASE WHEN excluded.{column} {better} {table}.{column}"
        f" THEN excluded.{column} ELSE {table}.{column} END"
    )


def _session_agents(day_sessions: set[tuple[dt.date, str]]) -> dict[tuple[dt.date, str, int], int]:
    """Distinct subagents per (day, session, key), counted over the ledger (not additive)."""
    days = {day for day, _ in day_sessions}
    sessions = {session for _, session in day_sessions}
    start = dt.datetime.combine(min(days), dt.time(0), tzinfo=UTC)
    end = dt.datetime.combine(max(days), dt.time(0), tzinfo=UTC) + DAY
    rows = (
        UsageRecord.objects.filter(
            session_id__in=sessions, created_at__gte=start, created_at__lt=end
        )
        .exclude(agent_id="")
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day", "session_id", "key_id")
        .annotate(agents=Count("agent_id", distinct=True))
        .order_by()
    )
    return {
        (row["day"], row["session_id"], row["key_id"] or 0): int(row["agents"])
        for row in rows
        if (row["day"], row["session_id"]) in day_sessions
    }


# --- reading ---------------------------------------------------------------------------------


@dataclass
class Totals:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_micros: int = 0

    def add(self, counts: Sequence[int]) -> None:
        for name, value in zip(COUNTS, counts, strict=True):
            setattr(self, name, getattr(self, name) + int(value))

    @property
    def tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )

    @property
    def cost_usd(self) -> Decimal:
        return micros_to_usd(self.cost_micros)


@dataclass
class SeriesPoint(Totals):
    bucket: dt.datetime = field(default_factory=timezone.now)  # start, in the requested zone
    group: int | str | None = None


@dataclass
class GroupTotal(Totals):
    group: int | str | None = None


@dataclass
class SessionTotal(Totals):
    session_id: str = ""
    key_id: int = 0
    team_id: int = 0
    agents: int = 0
    first_seen: dt.datetime | None = None
    last_seen: dt.datetime | None = None


def cursor_position() -> int:
    row = RollupCursor.objects.filter(name=CURSOR).values_list("last_usage_id", flat=True)
    return int(row[0]) if row else 0


def _floor_hour(value: dt.datetime) -> dt.datetime:
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _ceil_hour(value: dt.datetime) -> dt.datetime:
    floor = _floor_hour(value)
    return floor if floor == value else floor + HOUR


def _check_group(group_by: str | None) -> str | None:
    if group_by is None:
        return None
    if group_by not in GROUPS:
        raise ValueError(f"cannot group by {group_by!r}; choose one of {sorted(GROUPS)}")
    return GROUPS[group_by]


def _read_consistently(read: Callable[[int], T]) -> T:
    """Run `read(cursor)` so that rollups and the ledger above the cursor are from the same
    moment: if a rollup batch committed meanwhile (the cursor moved), read again."""
    for _ in range(5):
        before = cursor_position()
        result = read(before)
        if cursor_position() == before:
            return result
    return result


def _rollup_cells(
    organization_id: int,
    start: dt.datetime,
    end: dt.datetime,
    group_field: str | None,
    filters: Mapping[str, Any],
    *,
    hourly: bool,
) -> Iterator[tuple[dt.datetime, Any, list[int]]]:
    """(bucket, group, counts) from the rollup tables for [start, end), hour-aligned.

    Whole UTC days are read from day cells unless `hourly`; the edges from hour cells.
    """
    ranges: list[tuple[str, dt.datetime, dt.datetime]] = []
    first_day = _floor_hour(start).replace(hour=0)
    if first_day < start:
        first_day += DAY
    last_day = _floor_hour(end).replace(hour=0)
    if hourly or first_day >= last_day:
        ranges.append((SpendRollup.Granularity.HOUR, start, end))
    else:
        ranges += [
            (SpendRollup.Granularity.HOUR, start, first_day),
            (SpendRollup.Granularity.DAY, first_day, last_day),
            (SpendRollup.Granularity.HOUR, last_day, end),
        ]
    fields = ["bucket_start"] + ([group_field] if group_field else [])
    for granularity, low, high in ranges:
        if low >= high:
            continue
        rows = (
            SpendRollup.objects.filter(
                granularity=granularity,
                organization_id=organization_id,
                bucket_start__gte=low,
                bucket_start__lt=high,
                **filters,
            )
            .values(*fields)
            .annotate(**{"n_" + name: Sum(name) for name in COUNTS})
            .order_by()
        )
        for row in rows:
            group = row[group_field] if group_field else None
            yield row["bucket_start"], group, _counts_of(row)


def _ledger_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    return {LEDGER_DIMENSION[name]: value for name, value in filters.items()}


def _partial_cells(
    cursor: int,
    organization_id: int,
    *,
    start: dt.datetime,
    end: dt.datetime,
    group_field: str | None,
    filters: Mapping[str, Any],
) -> Iterator[tuple[dt.datetime, Any, list[int]]]:
    """The same shape from the ledger rows not rolled up yet (ids above the cursor)."""
    group = LEDGER_DIMENSION[group_field] if group_field else None
    rows = (
        UsageRecord.objects.filter(
            id__gt=cursor,
            organization_id=organization_id,
            created_at__gte=start,
            created_at__lt=end,
        )
        .annotate(bucket=TruncHour("created_at", tzinfo=UTC), **_ledger_dimensions())
        .filter(**_ledger_filters(filters))
        .values("bucket", *([group] if group else []))
        .annotate(**_ledger_counts())
        .order_by()
    )
    for row in rows:
        yield row["bucket"], (row[group] if group else None), _counts_of(row)


def _check_filters(filters: Mapping[str, Any] | None) -> dict[str, Any]:
    checked = {}
    for name, value in (filters or {}).items():
        column = GROUPS.get(name, name)
        if column not in DIMENSIONS:
            raise ValueError(f"cannot filter on {name!r}")
        checked[column] = value
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
    {"team": 3}. Days in a zone whose offset is not whole hours are approximate by the offset's
    minutes (cells are whole UTC hours).
    """
    if granularity not in ("hour", "day"):
        raise ValueError("granularity is 'hour' or 'day'")
    group_field = _check_group(group_by)
    checked = _check_filters(filters)
    zone = zoneinfo.ZoneInfo(tz)
    low, high = _floor_hour(start), _ceil_hour(end)
    hourly = granularity == "hour" or tz != "UTC"

    def read(cursor: int) -> list[tuple[dt.datetime, Any, list[int]]]:
        cells = list(_rollup_cells(organization_id, low, high, group_field, checked, hourly=hourly))
        cells += _partial_cells(
            cursor, organization_id, start=low, end=high, group_field=group_field, filters=checked
        )
        return cells

    points: dict[tuple[dt.datetime, Any], SeriesPoint] = {}
    for bucket, group, counts in _read_consistently(read):
        local = bucket.astimezone(zone)
        if granularity == "day":
            # ZoneInfo derives the offset from the wall time, so this is the local midnight.
            local = local.replace(hour=0, minute=0, second=0, microsecond=0)
        point = points.setdefault((local, group), SeriesPoint(bucket=local, group=group))
        point.add(counts)
    return sorted(points.values(), key=lambda p: (p.bucket, str(p.group)))


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
    checked = _check_filters(filters)
    low, high = _floor_hour(start), _ceil_hour(end)

    def read(cursor: int) -> list[tuple[dt.datetime, Any, list[int]]]:
        cells = list(_rollup_cells(organization_id, low, high, group_field, checked, hourly=False))
        cells += _partial_cells(
            cursor, organization_id, start=low, end=high, group_field=group_field, filters=checked
        )
        return cells

    groups: dict[Any, GroupTotal] = {}
    for _, group, counts in _read_consistently(read):
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


def top_sessions(
    organization_id: int,
    start: dt.datetime,
    end: dt.datetime,
    *,
    limit: int = 10,
    team_id: int | None = None,
    key_id: int | None = None,
) -> list[SessionTotal]:
    """The Claude Code sessions that cost most on the UTC days [start, end) touches.

    Sessions with rows not rolled up yet are read from the ledger and merged, so the ranking is
    exact without reading more than `limit` sessions from the rollups.
    """
    first_day = start.astimezone(UTC).date()
    last_day = (end.astimezone(UTC) - dt.timedelta(microseconds=1)).date()
    scope: dict[str, Any] = {"organization_id": organization_id}
    if team_id is not None:
        scope["team_id"] = team_id
    if key_id is not None:
        scope["key_id"] = key_id

    def read(cursor: int) -> list[SessionTotal]:
        recent = _recent_sessions(cursor, scope, first_day, last_day)
        rolled = SessionRollup.objects.filter(day__gte=first_day, day__lte=last_day, **scope)
        best = [
            row["session_id"]
            for row in rolled.values("session_id")
            .annotate(cost=Sum("cost_micros"))
            .order_by("-cost", "session_id")[:limit]
        ]
        wanted = set(best) | set(recent)
        merged: dict[str, SessionTotal] = {}
        rows: Iterable[Mapping[str, Any]] = rolled.filter(session_id__in=wanted).values(
            "session_id",
            "key_id",
            "team_id",
            "requests",
            "agents",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "cost_micros",
            "first_seen",
            "last_seen",
        )
        for row in rows:
            _merge_session(merged, row)
        for row in recent.values():
            _merge_session(merged, row)
        return list(merged.values())

    sessions: list[SessionTotal] = _read_consistently(read)
    sessions.sort(key=lambda s: (-s.cost_micros, s.session_id))
    return sessions[:limit]


def _recent_sessions(
    cursor: int, scope: Mapping[str, Any], first_day: dt.date, last_day: dt.date
) -> dict[str, dict[str, Any]]:
    start = dt.datetime.combine(first_day, dt.time(0), tzinfo=UTC)
    end = dt.datetime.combine(last_day, dt.time(0), tzinfo=UTC) + DAY
    rows = cast(
        Iterable[Mapping[str, Any]],
        (
            UsageRecord.objects.filter(
                id__gt=cursor, created_at__gte=start, created_at__lt=end, **scope
            )
            .exclude(session_id="")
            .values("session_id")
            .annotate(
                s_key=Max("key_id"),
                s_team=Max("team_id"),
                s_agents=Count("agent_id", distinct=True, filter=~Q(agent_id="")),
                s_first=Min("created_at"),
                s_last=Max("created_at"),
                **_ledger_counts(),
            )
            .order_by()
        ),
    )
    return {
        row["session_id"]: {
            "session_id": row["session_id"],
            "key_id": row["s_key"],
            "team_id": row["s_team"],
            "agents": row["s_agents"],
            "first_seen": row["s_first"],
            "last_seen": row["s_last"],
            **{name: row["n_" + name] for name in COUNTS},
        }
        for row in rows
    }


def _merge_session(merged: dict[str, SessionTotal], row: Mapping[str, Any]) -> None:
    session = merged.setdefault(
        row["session_id"],
        SessionTotal(
            session_id=row["session_id"], key_id=row["key_id"] or 0, team_id=row["team_id"] or 0
        ),
    )
    session.add([row["requests"], 0, *(row[name] or 0 for name in COUNTS[2:])])
    # Subagents are not additive across days or the partial hour; the largest count is a bound.
    session.agents = max(session.agents, int(row["agents"] or 0))
    for name, pick in (("first_seen", min), ("last_seen", max)):
        current = getattr(session, name)
        setattr(session, name, row[name] if current is None else pick(current, row[name]))
