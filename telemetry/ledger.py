"""Writing usage events to the ledger and reading spend back from it (sync, ORM)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Q, Sum

from telemetry.models import UsageRecord

_FIELDS = tuple(f for f in UsageRecord._meta.concrete_fields if f.name != "id")
LEDGER_FIELDS = frozenset(f.name for f in _FIELDS)
# A missing key takes the column's default ("" for text, None for nullable ids), as an ORM
# insert would.
_DEFAULTS = tuple((f.name, f.get_default()) for f in _FIELDS)
_DATETIME_FIELDS = frozenset(f.name for f in _FIELDS if f.get_internal_type() == "DateTimeField")


def _columns() -> str:
    quote = connection.ops.quote_name
    return ", ".join(quote(f.column or f.name) for f in _FIELDS)


def _table() -> str:
    return connection.ops.quote_name(UsageRecord._meta.db_table)


def _conflict() -> str:
    return f"ON CONFLICT ({connection.ops.quote_name('request_id')}) DO NOTHING"


# Identifiers in the SQL below come from model metadata; every value is a parameter or COPY data.


def _insert_sql() -> str:
    # PostgreSQL and SQLite (3.24+) both accept ON CONFLICT ... DO NOTHING.
    values = ", ".join(["%s"] * len(_FIELDS))
    return f"INSERT INTO {_table()} ({_columns()}) VALUES ({values}) {_conflict()}"  # noqa: S608


STAGING_TABLE = "usage_incoming"


def _copy_sql() -> tuple[str, str, str, str]:
    """PostgreSQL: a per-connection staging table, COPY into it, one INSERT ... SELECT that
    skips request ids already in the ledger, then empty it (not only at commit: inside an
    enclosing transaction a second batch would re-insert the first one's rows)."""
    create = (
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGING_TABLE} ON COMMIT DELETE ROWS AS "  # noqa: S608
        f"SELECT {_columns()} FROM {_table()} WITH NO DATA"
    )
    copy = f"COPY {STAGING_TABLE} ({_columns()}) FROM STDIN"
    insert = (
        f"INSERT INTO {_table()} ({_columns()}) "  # noqa: S608
        f"SELECT {_columns()} FROM {STAGING_TABLE} {_conflict()}"
    )
    return create, copy, insert, f"DELETE FROM {STAGING_TABLE}"  # noqa: S608


def _row(event: Mapping[str, Any]) -> tuple[Any, ...]:
    adapt = connection.ops.adapt_datetimefield_value
    return tuple(
        adapt(event.get(name)) if name in _DATETIME_FIELDS else event.get(name, default)
        for name, default in _DEFAULTS
    )


def write_events(events: Iterable[Mapping[str, Any]]) -> int:
    """Insert a batch in one transaction; rows whose request_id is already in the ledger are
    skipped (idempotent). Returns the number of events offered.

    No ORM: bulk_create spent ~170 µs per row building model instances and SQL, a visible share
    of a gateway worker's CPU (benchmarks/README.md). On PostgreSQL the batch goes through COPY:
    Django's psycopg cursor binds parameters client-side, rendering every value into SQL text
    in Python, which halved the sustained insert rate on a 10-million-row ledger.
    """
    rows = [_row(event) for event in events]
    if not rows:
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            create, copy_sql, insert, empty = _copy_sql()
            cursor.execute(create)
            with cursor.cursor.copy(copy_sql) as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(insert)
            cursor.execute(empty)
        else:
            cursor.executemany(_insert_sql(), rows)
    return len(rows)


def write_events_reusing_connection(events: list[dict[str, Any]]) -> int:
    """For the gateway's one ledger-writer thread: keeps the thread's connection open between
    batches (opening one per batch cost milliseconds), and retries a batch once on a fresh
    connection when the kept one has gone bad (database restarted, idle timeout). A second
    failure is raised, and the caller spools the batch.
    """
    try:
        return write_events(events)
    except (OperationalError, InterfaceError):  # not IntegrityError / DataError: no use retrying
        connection.close()
        return write_events(events)


def close_connection() -> None:
    """Release the calling thread's database connection."""
    connection.close()


def pattern_regex(pattern: str) -> str:
    """A shell pattern (only * and ?) as an anchored regex both SQLite and PostgreSQL accept."""
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return "^" + "".join(parts) + "$"


def spend_micros(
    *,
    scope: str,
    owner_id: int,
    start: dt.datetime | None,
    end: dt.datetime | None,
    model_patterns: tuple[str, ...] = (),
    provider_names: tuple[str, ...] = (),
) -> int:
    """Ledger spend of one budget's owner in a period: what a budget counter is seeded from.

    A key's spend includes its sub-keys', because a parent key's budgets cover its sub-keys.
    """
    owner = {
        "key": Q(key_id=owner_id) | Q(parent_key_id=owner_id),
        "team": Q(team_id=owner_id),
        "project": Q(project_id=owner_id),
        "organization": Q(organization_id=owner_id),
    }[scope]
    rows = UsageRecord.objects.filter(owner)
    if start is not None:
        rows = rows.filter(created_at__gte=start)
    if end is not None:
        rows = rows.filter(created_at__lt=end)
    if model_patterns:
        models = Q()
        for pattern in model_patterns:
            models |= Q(routed_model__regex=pattern_regex(pattern))
        rows = rows.filter(models)
    if provider_names:
        rows = rows.filter(provider__in=provider_names)
    return int(rows.aggregate(total=Sum("cost_micros"))["total"] or 0)


def spend_micros_and_close(**kwargs: Any) -> int:
    try:
        return spend_micros(**kwargs)
    finally:
        connection.close()
