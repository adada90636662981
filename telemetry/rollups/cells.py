"""Writing the rollups (`run_rollups`, every minute).

The ledger is read forward by id from a watermark (RollupCursor "ledger"). The new rows are
aggregated per hour and per (organization, team, project, key, served model, provider, and
routed model and parent key for budgets) and *added* to the hour and day cells, and to one
SessionRollup line per (UTC day, session, key), in the same transaction that moves the
watermark. So a row is counted exactly once: a run that fails rolls back its additions together
with the watermark, and a second worker waits on the cursor row (select_for_update; SQLite
serializes writers) and then reads the watermark the first one left. A spooled replay arrives
with an old created_at but a new id, so it is picked up like any other row and lands in its own
old hour.

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
lose nothing to this lag: the selectors (series, sessions, budgets) add the rows above the
watermark from the ledger.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Min
from django.utils import timezone

from telemetry.models import RollupCursor, SessionAgent, SessionRollup, SpendRollup, UsageRecord
from telemetry.rollups.common import (
    CELL_DIMENSIONS,
    COUNTS,
    CURSOR,
    HORIZON,
    MODEL_LENGTH,
    TOOL_MODEL_PREFIX,
    TOOL_ROUTE,
)

BATCH_ROWS = 500_000
BATCH_WORK_MEM = "256MB"


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


def _model_sql(c: dict[str, str]) -> str:
    """The cell's model: the served one, or mcp:<server>/<tool> for an MCP tool call (the
    constants are ours; || concatenates on both databases)."""
    tool = (
        f"SUBSTR('{TOOL_MODEL_PREFIX}' || {c['tool_server']} || '/' || {c['tool_name']}, 1, "
        f"{MODEL_LENGTH})"
    )
    served = (
        f"COALESCE(NULLIF({c['served_model']}, ''), NULLIF({c['routed_model']}, ''),"
        f" {c['requested_model']})"
    )
    return f"CASE WHEN {c['route']} = '{TOOL_ROUTE}' THEN {tool} ELSE {served} END"


def _ledger_sql() -> dict[str, str]:
    """Ledger columns in rollup shape, as SQL: NULL ids become 0, the model is the served one."""
    c = _columns(UsageRecord)
    return {
        "organization_id": f"COALESCE({c['organization_id']}, 0)",
        "team_id": f"COALESCE({c['team_id']}, 0)",
        "project_id": f"COALESCE({c['project_id']}, 0)",
        "key_id": f"COALESCE({c['key_id']}, 0)",
        "model": _model_sql(c),
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
