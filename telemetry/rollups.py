"""Hourly and daily rollups of the ledger, and the selectors dashboards read them through.

Writing (`run_rollups`, every minute): the ledger is read forward by id from a watermark
(RollupCursor "ledger"). The new rows are aggregated per hour and per (organization, team,
project, key, served model, provider, and routed model and parent key for budgets) and *added*
to the hour and day cells, and to one SessionRollup line per (UTC day, session, key), in the
same transaction that moves the watermark. So a row is counted exactly once: a run that fails
rolls back its additions together with the watermark, and a second worker waits on the cursor
row (select_for_update; SQLite serializes writers) and then reads the watermark the first one
left. A spooled replay arrives with an old created_at but a new id, so it is picked up like any
other row and lands in its own old hour.

Adding new rows rather than recomputing whole buckets keeps a run proportional to the new rows
(a busy hour holds millions), and stays right after retention has deleted the raw rows of an
old bucket that a late row then lands in. The database does the adding, so no ledger row
crosses the wire: a batch (an id range of the ledger) is aggregated into hour cells in a
temporary table, which are added to the hour cells and, summed per day, to the day cells; two
more statements add the batch to its session lines and subagents. All are INSERT ... SELECT
... ON CONFLICT DO UPDATE, the same on PostgreSQL and SQLite but for the UTC hour and day
expressions. The distinct subagents of a session line are additive too: a batch counts the
agents not yet in SessionAgent for the line and then adds them there.

Ids are handed out when a row is inserted but become visible when its transaction commits, so
a writer that commits late can leave a row below ids that are already visible. The watermark
therefore only advances to a *horizon*: the highest id that was visible at least
`settle_seconds` ago (RollupCursor "ledger.horizon", remembered between runs). Ledger writes are
sub-second transactions, so by then every row at or below the horizon is committed. Readers
lose nothing to this lag: the selectors add the rows above the watermark from the ledger.

Buckets are UTC hours and UTC days. A series in another time zone reads the day cell of each
UTC day and the hour cells of only the hours its offset moves to another local day (_plan), so
a month view reads about as many cells in New York as in UTC. Budget spend (budget_costs) is
read the same way, plus the minutes at the ends of a period that do not fill an hour.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar, cast

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Count, F, IntegerField, Max, Min, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Coalesce, NullIf, TruncHour
from django.utils import timezone

from governance.money import micros_to_usd
from telemetry.models import (
    RollupCursor,
    SessionAgent,
    SessionRollup,
    SpendRollup,
    UsageRecord,
)

CURSOR = "ledger"
HORIZON = "ledger.horizon"
BATCH_ROWS = 500_000
BATCH_WORK_MEM = "256MB"
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
UTC = dt.UTC

DIMENSIONS = ("organization_id", "team_id", "project_id", "key_id", "model", "provider")
# What makes a cell: the dimensions plus what budgets match on (see SpendRollup).
CELL_DIMENSIONS = (*DIMENSIONS, "routed_model", "parent_key_id")
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
    """Roll up the next batch of rows at or below `upper`; returns (rows, new watermark).

    The batch is added to the cells by a few INSERT ... SELECT ... GROUP BY ... ON CONFLICT DO
    UPDATE statements: the database aggregates the rows and adds them where they belong, and
    nothing but the statements crosses the wire.
    """
    with transaction.atomic():
        cursor = RollupCursor.objects.select_for_update().get(name=CURSOR)
        start = cursor.last_usage_id
        if start >= upper:
            return 0, start
        end = _batch_end(start, upper, batch_rows)
        rows = UsageRecord.objects.filter(id__gt=start, id__lte=end).count()
        if rows:
            with connection.cursor() as db:
                if connection.vendor == "postgresql":
                    # Lets the planner aggregate a batch in memory rather than sort it on disk.
                    db.execute(f"SET LOCAL work_mem = '{BATCH_WORK_MEM}'")
                for sql in _batch_sql():
                    db.execute(sql, {"start": start, "end": end})
        cursor.last_usage_id = end
        cursor.save(update_fields=["last_usage_id", "updated_at"])
        return rows, end


def _batch_end(start: int, upper: int, batch_rows: int) -> int:
    """The last id of the next batch: `batch_rows` ids on from the first row above `start`, so
    a batch holds at most that many rows (fewer where ids were skipped). Two index lookups,
    where counting rows off would scan them; a gap in the ids costs no empty batch."""
    first = UsageRecord.objects.filter(id__gt=start, id__lte=upper).aggregate(first=Min("id"))
    if first["first"] is None:
        return upper
    return min(int(first["first"]) + batch_rows - 1, upper)


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _column(model: type[Any], name: str) -> str:
    return _q(model._meta.get_field(name).column)


def _columns(model: type[Any]) -> dict[str, str]:
    """Quoted column of every field, by field name."""
    return {f.name: _column(model, f.name) for f in model._meta.concrete_fields}


def _utc_sql(column: str) -> dict[str, str]:
    """SQL for the UTC hour, the UTC day (both as timestamps) and the UTC date of a datetime
    column: the one part of the rollup statements that differs between the two databases."""
    if connection.vendor == "postgresql":
        utc = f"({column} AT TIME ZONE 'UTC')"  # whatever the session's time zone
        return {
            "hour": f"(date_trunc('hour', {utc}) AT TIME ZONE 'UTC')",
            "day": f"(date_trunc('day', {utc}) AT TIME ZONE 'UTC')",
            "date": f"CAST({utc} AS date)",
        }
    if connection.vendor == "sqlite":
        # Django stores datetimes as naive UTC text, "YYYY-MM-DD HH:MM:SS[.ffffff]", and dates
        # as "YYYY-MM-DD". (%% is a literal % next to query parameters.)
        return {
            "hour": f"strftime('%%Y-%%m-%%d %%H:00:00', {column})",
            "day": f"strftime('%%Y-%%m-%%d 00:00:00', {column})",
            "date": f"date({column})",
        }
    raise NotImplementedError(f"rollups support PostgreSQL and SQLite, not {connection.vendor}")


def _ledger_sql() -> dict[str, str]:
    """Ledger columns in rollup shape, as SQL: NULL ids become 0, the model is the served one."""
    c = _columns(UsageRecord)
    return {
        "organization_id": f"COALESCE({c['organization_id']}, 0)",
        "team_id": f"COALESCE({c['team_id']}, 0)",
        "project_id": f"COALESCE({c['project_id']}, 0)",
        "key_id": f"COALESCE({c['key_id']}, 0)",
        "model": (
            f"COALESCE(NULLIF({c['served_model']}, ''), NULLIF({c['routed_model']}, ''),"
            f" {c['requested_model']})"
        ),
        "provider": c["provider"],
        "routed_model": c["routed_model"],
        "parent_key_id": f"COALESCE({c['parent_key_id']}, 0)",
        "requests": "COUNT(*)",
        "errors": f"SUM(CASE WHEN {c['status']} >= 400 THEN 1 ELSE 0 END)",
        "input_tokens": f"SUM({c['input_tokens']})",
        "output_tokens": f"SUM({c['output_tokens']})",
        "cache_read_tokens": f"SUM({c['cache_read_tokens']})",
        "cache_write_tokens": (f"SUM({c['cache_write_5m_tokens']} + {c['cache_write_1h_tokens']})"),
        "cost_micros": f"SUM({c['cost_micros']})",
    }


def _batch_where() -> str:
    """The batch's rows: every statement takes the parameters `start` and `end`."""
    return f"{_column(UsageRecord, 'id')} > %(start)s AND {_column(UsageRecord, 'id')} <= %(end)s"


BATCH_CELLS = "rollup_batch_cells"  # a temporary table, one batch's hour cells


def _batch_sql() -> list[str]:
    """The statements that add one batch of ledger rows to the rollups, in order."""
    return [
        _batch_cells_sql(),
        _spend_sql(SpendRollup.Granularity.HOUR),
        _spend_sql(SpendRollup.Granularity.DAY),
        f"DROP TABLE {_q(BATCH_CELLS)}",
        _sessions_sql(),
        _agents_sql(),
    ]


def _add_counts(table: str, columns: Iterable[str]) -> str:
    return ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in columns)


def _batch_cells_sql() -> str:
    """The batch aggregated into hour cells, in a temporary table: the hour and the day cells
    are both added from it, so the batch's rows are aggregated once.

    Identifiers come from model metadata; the batch bounds are parameters, so nothing from
    outside reaches the SQL text.
    """
    ledger = _ledger_sql()
    keys = {
        "bucket_start": _utc_sql(_column(UsageRecord, "created_at"))["hour"],
        **{name: ledger[name] for name in CELL_DIMENSIONS},
    }
    select = [f"{sql} AS {name}" for name, sql in keys.items()]
    select += [f"{ledger[name]} AS {name}" for name in COUNTS]
    return (
        f"CREATE TEMPORARY TABLE {_q(BATCH_CELLS)} AS "  # noqa: S608
        f"SELECT {', '.join(select)} "
        f"FROM {_q(UsageRecord._meta.db_table)} WHERE {_batch_where()} "
        f"GROUP BY {', '.join(keys.values())}"
    )


def _spend_sql(granularity: str) -> str:
    """Add the batch's hour cells to the hour (or day) cells, creating the cells that do not
    exist. The granularity comes from SpendRollup.Granularity."""
    table = _q(SpendRollup._meta.db_table)
    day = _utc_sql("bucket_start")["day"]
    keys = ["bucket_start", *CELL_DIMENSIONS]
    columns = [_column(SpendRollup, name) for name in ("granularity", *keys, *COUNTS)]
    counts = [_column(SpendRollup, name) for name in COUNTS]
    conflict = ", ".join(columns[: 1 + len(keys)])
    if granularity == SpendRollup.Granularity.HOUR:
        select = f"bucket_start, {', '.join(CELL_DIMENSIONS)}, {', '.join(COUNTS)}"
        group = ""
        order = "organization_id, bucket_start"
    else:
        select = f"{day}, {', '.join(CELL_DIMENSIONS)}, "
        select += ", ".join(f"SUM({name})" for name in COUNTS)
        group = f"GROUP BY {day}, {', '.join(CELL_DIMENSIONS)} "
        order = f"organization_id, {day}"
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608
        f"SELECT '{granularity}', {select} FROM {_q(BATCH_CELLS)} "
        # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT (parsing ambiguity).
        f"WHERE 1 = 1 {group}"
        # New cells go to the table in this order: the cells of one organization's hours then
        # lie together, and reading a few hours of a month reads only their pages.
        f"ORDER BY {order} "
        f"ON CONFLICT ({conflict}) DO UPDATE SET {_add_counts(table, counts)}"
    )


def _sessions_sql() -> str:
    """Add the batch to its sessions' daily lines (UTC day, session, key).

    Subagents are counted as those of the batch not yet in SessionAgent for the line (the next
    statement adds them there), so the distinct count is additive like the other figures.
    """
    table = _q(SessionRollup._meta.db_table)
    seen = _q(SessionAgent._meta.db_table)
    u, s, a = _columns(UsageRecord), _columns(SessionRollup), _columns(SessionAgent)
    day = _utc_sql(u["created_at"])["date"]
    key = f"COALESCE({u['key_id']}, 0)"
    ledger = _ledger_sql()
    sums = [name for name in COUNTS if name not in ("requests", "errors")]
    line = ("day", "session_id", "key_id")
    in_batch = f"FROM {_q(UsageRecord._meta.db_table)} WHERE {_batch_where()} "
    lines = (
        f"SELECT {day} AS day, {u['session_id']} AS session_id, {key} AS key_id, "
        f"COALESCE(MAX({u['organization_id']}), 0) AS org, "
        f"COALESCE(MAX({u['team_id']}), 0) AS team, COUNT(*) AS requests, "
        + "".join(f"{ledger[name]} AS {name}, " for name in sums)
        + f"MIN({u['created_at']}) AS first_seen, MAX({u['created_at']}) AS last_seen "
        f"{in_batch} AND {u['session_id']} <> '' "
        f"GROUP BY {day}, {u['session_id']}, {key}"
    )
    is_seen = " AND ".join(f"{seen}.{a[name]} = n.{name}" for name in (*line, "agent_id"))
    fresh = (
        "SELECT day, session_id, key_id, COUNT(*) AS agents FROM ("  # noqa: S608
        f"SELECT DISTINCT {day} AS day, {u['session_id']} AS session_id, {key} AS key_id, "
        f"{u['agent_id']} AS agent_id "
        f"{in_batch} AND {u['session_id']} <> '' AND {u['agent_id']} <> '') n "
        f"WHERE NOT EXISTS (SELECT 1 FROM {seen} WHERE {is_seen}) "
        "GROUP BY day, session_id, key_id"
    )
    names = [*line, "organization_id", "team_id", "requests", *sums, "agents"]
    names += ["first_seen", "last_seen"]
    select = [f"b.{name}" for name in (*line, "org", "team", "requests", *sums)]
    select += ["COALESCE(f.agents, 0)", "b.first_seen", "b.last_seen"]
    on_line = " AND ".join(f"f.{name} = b.{name}" for name in line)
    updates = _add_counts(table, [s[name] for name in ("requests", *sums, "agents")])
    updates += ", " + _pick(table, s["first_seen"], "<") + ", " + _pick(table, s["last_seen"], ">")
    return (
        f"INSERT INTO {table} ({', '.join(s[name] for name in names)}) "  # noqa: S608
        f"SELECT {', '.join(select)} FROM ({lines}) b LEFT JOIN ({fresh}) f ON {on_line} "
        # SQLite needs a WHERE before ON CONFLICT here, or it reads ON as a join constraint.
        "WHERE 1 = 1 "
        f"ON CONFLICT ({', '.join(s[name] for name in line)}) DO UPDATE SET {updates}"
    )


def _agents_sql() -> str:
    """Remember the batch's subagents per session line (after _sessions_sql counted them)."""
    seen = _q(SessionAgent._meta.db_table)
    u = _columns(UsageRecord)
    columns = ", ".join(
        _column(SessionAgent, n) for n in ("day", "session_id", "key_id", "agent_id")
    )
    return (
        f"INSERT INTO {seen} ({columns}) "  # noqa: S608
        f"SELECT DISTINCT {_utc_sql(u['created_at'])['date']}, {u['session_id']}, "
        f"COALESCE({u['key_id']}, 0), {u['agent_id']} "
        f"FROM {_q(UsageRecord._meta.db_table)} "
        f"WHERE {_batch_where()} AND {u['session_id']} <> '' AND {u['agent_id']} <> '' "
        f"ON CONFLICT ({columns}) DO NOTHING"
    )


def _pick(table: str, column: str, better: str) -> str:
    """SET clause keeping the smaller or larger of the stored and the new value (portable
    LEAST/GREATEST: SQLite has neither)."""
    return (
        f"{column} = CASE WHEN excluded.{column} {better} {table}.{column}"
        f" THEN excluded.{column} ELSE {table}.{column} END"
    )


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


def _ceil_day(hour: dt.datetime) -> dt.datetime:
    floor = hour.replace(hour=0)
    return floor if floor == hour else floor + DAY


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


# Which rollup cells to read for a range of whole UTC hours counted in buckets (local days of a
# time zone, say). A UTC day whose hours mostly fall in one bucket is read as its day cell,
# counted in that bucket; its other hours are read as hour cells, added to their own buckets
# and taken off the day cell's. So a month of local days reads 30 day cells per dimension and
# only the hours a zone's offset moves across midnight (5 a day in New York, none in UTC), not
# 720 hour cells. Cells are additive, so the subtraction is exact.


@dataclass(frozen=True, slots=True)
class _Hours:
    """Hour cells [low, high), counted in `bucket` and taken off `minus` (when not None)."""

    low: dt.datetime
    high: dt.datetime
    bucket: Any
    minus: Any = None


@dataclass
class _Plan:
    days: dict[dt.datetime, Any] = field(default_factory=dict)  # day cell start -> bucket
    hours: list[_Hours] = field(default_factory=list)


def _plan(low: dt.datetime, high: dt.datetime, bucket_of: Callable[[dt.datetime], Any]) -> _Plan:
    """The cells that make up [low, high) (whole UTC hours), each hour counted in
    `bucket_of(hour start)`."""
    plan = _Plan()
    day = low.replace(hour=0)
    while day < high:
        runs = _runs(max(low, day), min(high, day + DAY), bucket_of)
        major = max(runs, key=lambda run: run.high - run.low)
        if major.high - major.low >= DAY / 2 and runs[0].low == day and runs[-1].high == day + DAY:
            plan.days[day] = major.bucket
            plan.hours += [
                _Hours(r.low, r.high, r.bucket, major.bucket) for r in runs if r != major
            ]
        else:
            plan.hours += runs
        day += DAY
    return plan


def _runs(
    low: dt.datetime, high: dt.datetime, bucket_of: Callable[[dt.datetime], Any]
) -> list[_Hours]:
    """[low, high) as runs of consecutive hours in the same bucket."""
    runs: list[_Hours] = []
    hour = low
    while hour < high:
        bucket = bucket_of(hour)
        if runs and _same_bucket(runs[-1].bucket, bucket):
            runs[-1] = _Hours(runs[-1].low, hour + HOUR, bucket)
        else:
            runs.append(_Hours(hour, hour + HOUR, bucket))
        hour += HOUR
    return runs


def _same_bucket(a: Any, b: Any) -> bool:
    """Equal buckets; local times also by offset: 01:00 EDT and 01:00 EST are equal to Python
    (same zone, same wall time) but are two hours."""
    if isinstance(a, dt.datetime) and isinstance(b, dt.datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    return bool(a == b)


def _total_plan(low: dt.datetime | None, high: dt.datetime | None) -> tuple[Q, list[_Hours]]:
    """For one total over [low, high) (whole UTC hours; None: unbounded): the day cells to
    read (a filter) and the hour cells of the partial UTC days at the ends."""
    first_day = _ceil_day(low) if low is not None else None
    last_day = high.replace(hour=0) if high is not None else None
    if first_day is not None and last_day is not None and first_day >= last_day:
        assert low is not None and high is not None
        return Q(pk__in=[]), [_Hours(low, high, None)] if low < high else []
    days, hours = Q(), []
    if first_day is not None and low is not None:
        days &= Q(bucket_start__gte=first_day)
        hours.append(_Hours(low, first_day, None))
    if last_day is not None and high is not None:
        days &= Q(bucket_start__lt=last_day)
        hours.append(_Hours(last_day, high, None))
    return days, [h for h in hours if h.low < h.high]


Row = Mapping[str, Any]


def _sums() -> dict[str, Any]:
    return {"n_" + name: Sum(name) for name in COUNTS}


def _day_rows(cells: QuerySet[SpendRollup], days: Q, fields: Sequence[str]) -> Iterable[Row]:
    rows = cells.filter(days, granularity=SpendRollup.Granularity.DAY)
    return cast(Iterable[Row], rows.values(*fields).annotate(**_sums()).order_by())


def _hour_rows(
    cells: QuerySet[SpendRollup],
    hours: Sequence[_Hours],
    fields: Sequence[str],
    *,
    per_slot: bool = False,
) -> Iterable[Row]:
    """Hour cells of `hours`, summed per `fields` (and per `slot`, the index of their range in
    `hours`, if `per_slot`).

    Asked for by the list of their hours, which the unique index (organization, time first)
    finds directly; and cells are stored in organization and hour order (_spend_sql), so only
    those hours' pages are read.
    """
    if not hours:
        return []
    starts = [hour for hour, _ in _each_hour(hours)]
    rows = cells.filter(granularity=SpendRollup.Granularity.HOUR, bucket_start__in=starts)
    if per_slot:
        slot = Case(
            *(
                When(bucket_start__gte=h.low, bucket_start__lt=h.high, then=Value(i))
                for i, h in enumerate(hours)
            ),
            output_field=IntegerField(),
        )
        rows = rows.annotate(slot=slot)
        fields = ["slot", *fields]
    return cast(Iterable[Row], rows.values(*fields).annotate(**_sums()).order_by())


def _each_hour(hours: Iterable[_Hours]) -> Iterator[tuple[dt.datetime, _Hours]]:
    for h in hours:
        hour = h.low
        while hour < h.high:
            yield hour, h
            hour += HOUR


def _negated(counts: list[int]) -> list[int]:
    return [-value for value in counts]


def _rollup_cells(
    organization_id: int, plan: _Plan, fields: Sequence[str], filters: Mapping[str, Any]
) -> Iterator[tuple[Any, Row, list[int]]]:
    """(bucket, row of `fields`, counts) from the rollup tables, as `plan` says."""
    cells = SpendRollup.objects.filter(organization_id=organization_id, **filters)
    if plan.days:
        days = Q(bucket_start__in=list(plan.days))
        for row in _day_rows(cells, days, ["bucket_start", *fields]):
            yield plan.days[row["bucket_start"]], row, _counts_of(row)
    for row in _hour_rows(cells, plan.hours, fields, per_slot=True):
        hours = plan.hours[row["slot"]]
        counts = _counts_of(row)
        yield hours.bucket, row, counts
        if hours.minus is not None:
            yield hours.minus, row, _negated(counts)


def _ledger_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    return {LEDGER_DIMENSION[name]: value for name, value in filters.items()}


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
        .annotate(bucket=TruncHour("created_at", tzinfo=UTC), **_ledger_dimensions())
        .filter(**_ledger_filters(filters))
        .values("bucket", *names)
        .annotate(**_ledger_counts())
        .order_by()
    )
    for row in rows:
        yield row["bucket"], {names[k]: row[k] for k in names}, _counts_of(row)


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
    low, high = _floor_hour(start), _ceil_hour(end)

    def bucket_of(hour: dt.datetime) -> dt.datetime:
        local = hour.astimezone(zone)
        if granularity == "day":
            # ZoneInfo derives the offset from the wall time, so this is the local midnight.
            local = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return local

    plan = _plan(low, high, bucket_of) if low < high else _Plan()

    def read(cursor: int) -> list[tuple[Any, Row, list[int]]]:
        cells = list(_rollup_cells(organization_id, plan, fields, checked))
        partial = _partial_cells(
            cursor, organization_id, start=low, end=high, fields=fields, filters=checked
        )
        cells += ((bucket_of(hour), row, counts) for hour, row, counts in partial)
        return cells

    # Per group-by: (UTC instant, group) -> (bucket, summed counts). By UTC instant: the local
    # times of the hour repeated when daylight saving time ends are equal to Python.
    sums: dict[str, dict[tuple[dt.datetime, Any], tuple[dt.datetime, list[int]]]]
    sums = {name: {} for name in columns}
    for bucket, row, counts in _read_consistently(read):
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
    low, high = _floor_hour(start), _ceil_hour(end)
    days, hours = _total_plan(low, high)

    def read(cursor: int) -> list[tuple[Row, list[int]]]:
        cells = SpendRollup.objects.filter(organization_id=organization_id, **checked)
        rows = [(row, _counts_of(row)) for row in _day_rows(cells, days, fields)]
        rows += [(row, _counts_of(row)) for row in _hour_rows(cells, hours, fields)]
        partial = _partial_cells(
            cursor, organization_id, start=low, end=high, fields=fields, filters=checked
        )
        rows += [(row, counts) for _, row, counts in partial]
        return rows

    groups: dict[Any, GroupTotal] = {}
    for row, counts in _read_consistently(read):
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


# --- budget spend ----------------------------------------------------------------------------

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
    low = _ceil_hour(start) if start is not None else None
    high = _floor_hour(end) if end is not None else None
    if low is not None and high is not None and low > high:
        high = low  # within one hour: all from the ledger
    days, hours = _total_plan(low, high)
    ledger = UsageRecord.objects.filter(organization_id=organization_id)
    if start is not None:
        ledger = ledger.filter(created_at__gte=start)
    if end is not None:
        ledger = ledger.filter(created_at__lt=end)

    def read(cursor: int) -> dict[BudgetCell, int]:
        costs: dict[BudgetCell, int] = defaultdict(int)
        cells = SpendRollup.objects.filter(organization_id=organization_id)
        for rows in (
            _day_rows(cells, days, BUDGET_FIELDS),
            _hour_rows(cells, hours, BUDGET_FIELDS),
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

    return _read_consistently(read)


def _budget_cell(row: Row) -> BudgetCell:
    return (
        int(row["team_id"] or 0),
        int(row["project_id"] or 0),
        int(row["key_id"] or 0),
        int(row["parent_key_id"] or 0),
        str(row["routed_model"]),
        str(row["provider"]),
    )


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
