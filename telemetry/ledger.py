"""Writing usage events to the ledger and reading spend back from it (sync, ORM)."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import psycopg
from django.db import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models import Field, Q, Sum

from telemetry.models import UsageRecord
from telemetry.spool import Rejected, WriteResult

_FIELDS = tuple(f for f in UsageRecord._meta.concrete_fields if f.name != "id")
LEDGER_FIELDS = frozenset(f.name for f in _FIELDS)

# --- cleaning: every value fits its column ----------------------------------------------------
# Strings come from clients and upstreams. On PostgreSQL one over-long or NUL-containing value
# failed the whole batch (every tenant's rows) and then blocked the replay of the spool. Each
# column gets one cleaner, built once from the model's field metadata; a missing key takes the
# column's default ("" for text, None for nullable ids), as an ORM insert would.

Cleaner = Callable[[Any], Any]
_MISSING: Any = object()
# C0 and C1 controls (NUL among them) and lone surrogates, which UTF-8 cannot carry.
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_LINE_BREAKS = re.compile("[\t\n\r]+")
_FALSE_WORDS = frozenset({"", "0", "false", "f", "no", "n", "off", "none", "null"})


def _as_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    try:
        return str(value)
    except Exception:  # a value whose __str__ fails is not worth losing the row for
        return ""


def _text_cleaner(field: Field[Any, Any]) -> Cleaner:
    limit = field.max_length or 0
    default = field.get_default()

    def clean(value: Any) -> Any:
        if type(value) is not str:
            if value is None or value is _MISSING:
                return default
            value = _as_text(value)
        if not value.isprintable():  # C-speed check; the regexes run only on the rare hit
            value = _UNSAFE.sub("", _LINE_BREAKS.sub(" ", value))
        # Python slices by code point, as PostgreSQL's varchar(n) counts characters.
        return value if not limit or len(value) <= limit else value[:limit]

    return clean


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float | decimal.Decimal):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str | bytes):
        try:
            return int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return None
            return int(number) if math.isfinite(number) else None
    return None


def _integer_cleaner(field: Field[Any, Any]) -> Cleaner:
    low, high = BaseDatabaseOperations.integer_field_ranges[field.get_internal_type()]
    default = field.get_default()
    if default is None and not field.null:
        default = max(low, 0)  # e.g. status: a row with status 0 beats a lost row

    def clean(value: Any) -> Any:
        if type(value) is not int:
            if value is None or value is _MISSING:
                return default
            try:
                value = _as_int(value)
            except (ArithmeticError, TypeError, ValueError):  # e.g. Decimal("sNaN")
                value = None
            if value is None:
                return default
        return low if value < low else high if value > high else value

    return clean


def _boolean_cleaner(field: Field[Any, Any]) -> Cleaner:
    default = bool(field.get_default())

    def clean(value: Any) -> Any:
        if type(value) is bool:
            return value
        if value is None or value is _MISSING:
            return default
        if isinstance(value, str | bytes):
            return _as_text(value).strip().lower() not in _FALSE_WORDS
        try:
            return bool(value)
        except Exception:
            return default

    return clean


def _as_datetime(value: Any) -> dt.datetime | None:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _datetime_cleaner(field: Field[Any, Any]) -> Cleaner:
    # No default to invent: a row without its time cannot be put in a budget period, so the
    # database refuses it and it is dead-lettered.
    def clean(value: Any) -> Any:
        if type(value) is dt.datetime and value.tzinfo is not None:
            return value
        return None if value is None or value is _MISSING else _as_datetime(value)

    return clean


def _default_cleaner(field: Field[Any, Any]) -> Cleaner:
    default = field.get_default()

    def clean(value: Any) -> Any:
        return default if value is None or value is _MISSING else value

    return clean


def _cleaner(field: Field[Any, Any]) -> Cleaner:
    kind = field.get_internal_type()
    if kind in ("CharField", "TextField"):
        return _text_cleaner(field)
    if kind in BaseDatabaseOperations.integer_field_ranges:
        return _integer_cleaner(field)
    if kind == "BooleanField":
        return _boolean_cleaner(field)
    if kind == "DateTimeField":
        return _datetime_cleaner(field)
    return _default_cleaner(field)


_CLEANERS = tuple((f.name, _cleaner(f)) for f in _FIELDS)
_DATETIME_INDEXES = tuple(
    i for i, f in enumerate(_FIELDS) if f.get_internal_type() == "DateTimeField"
)


def clean_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """The values the ledger would store for an event (unknown keys left out)."""
    return {name: clean(event.get(name, _MISSING)) for name, clean in _CLEANERS}


Row = Callable[[Mapping[str, Any], Callable[[Any], Any]], tuple[Any, ...]]


def _fits(field: Field[Any, Any], value: str) -> str:
    """A Python condition, true when `value` (a variable name) must go through the field's
    cleaner; for every other value the cleaner would return it unchanged."""
    kind = field.get_internal_type()
    if kind in ("CharField", "TextField"):
        too_long = f" or len({value}) > {field.max_length}" if field.max_length else ""
        return f"type({value}) is not str or not {value}.isprintable(){too_long}"
    if kind in BaseDatabaseOperations.integer_field_ranges:
        low, high = BaseDatabaseOperations.integer_field_ranges[kind]
        check = f"type({value}) is not int or not {low} <= {value} <= {high}"
        return f"{value} is not None and ({check})" if field.null else check
    if kind == "BooleanField":
        return f"type({value}) is not bool"
    if kind == "DateTimeField":
        return f"type({value}) is not datetime or {value}.tzinfo is None"
    return "True"


def _compile_row() -> Row:
    """The event -> row function, generated from the columns the way dataclasses generate an
    __init__: each value is checked inline and only one that does not fit its column goes
    through the column's cleaner. A cleaner call per column was 41 Python calls per row on the
    ledger writer's thread, which shares the interpreter with the event loop; tests check the
    two give the same rows. A missing key reads as what its cleaner makes of a missing value.
    """
    namespace: dict[str, Any] = {"datetime": dt.datetime}
    lines = ["def _row(event, adapt):", "    get = event.get"]
    for index, (field, (name, clean)) in enumerate(zip(_FIELDS, _CLEANERS, strict=True)):
        value = f"v{index}"
        namespace[f"clean{index}"] = clean
        namespace[f"missing{index}"] = clean(_MISSING)
        lines.append(f"    {value} = get({name!r}, missing{index})")
        lines.append(f"    if {_fits(field, value)}:")
        lines.append(f"        {value} = clean{index}({value})")
        if index in _DATETIME_INDEXES:
            lines.append(f"    {value} = adapt({value})")
    lines.append(f"    return ({', '.join(f'v{i}' for i in range(len(_FIELDS)))},)")
    exec("\n".join(lines), namespace)  # noqa: S102 - names and numbers from model metadata
    row: Row = namespace["_row"]
    return row


_row = _compile_row()


def _row_by_cleaners(event: Mapping[str, Any], adapt: Callable[[Any], Any]) -> tuple[Any, ...]:
    """What _row computes, one cleaner call per column (the reference the tests compare to)."""
    values = [clean(event.get(name, _MISSING)) for name, clean in _CLEANERS]
    for index in _DATETIME_INDEXES:
        values[index] = adapt(values[index])
    return tuple(values)


def _rows(events: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    adapt = connection.ops.adapt_datetimefield_value
    return [_row(event, adapt) for event in events]


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


def _insert(rows: Sequence[tuple[Any, ...]]) -> None:
    """One transaction (a savepoint inside an enclosing one)."""
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


def write_events(events: Iterable[Mapping[str, Any]]) -> int:
    """Insert a batch, cleaned, in one transaction; rows whose request_id is already in the
    ledger are skipped (idempotent). Returns the number of events offered.

    No ORM: bulk_create spent ~170 µs per row building model instances and SQL, a visible share
    of a gateway worker's CPU (benchmarks/README.md). On PostgreSQL the batch goes through COPY:
    Django's psycopg cursor binds parameters client-side, rendering every value into SQL text
    in Python, which halved the sustained insert rate on a 10-million-row ledger.
    """
    rows = _rows(events)
    if rows:
        _insert(rows)
    return len(rows)


# --- a bad row costs only itself --------------------------------------------------------------

# psycopg's own classes too: COPY runs on the raw psycopg cursor, outside Django's error wrapping.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
_ROW_ERRORS: tuple[type[Exception], ...] = (
    DataError,
    IntegrityError,
    psycopg.DataError,
    psycopg.IntegrityError,
    ValueError,  # a value a driver cannot encode (UnicodeEncodeError among them)
    TypeError,
    OverflowError,
)


def is_row_error(error: BaseException) -> bool:
    """Whether an error comes from a row's content (data exception or constraint violation,
    SQLSTATE classes 22 and 23), not from the connection or the schema."""
    if isinstance(error, CONNECTION_ERRORS):
        return False
    if isinstance(error, _ROW_ERRORS):
        return True
    sqlstate = getattr(error, "sqlstate", None) or getattr(error.__cause__, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in ("22", "23")


def _describe(error: BaseException) -> str:
    """The error's first line (PostgreSQL's DETAIL line repeats the row's values)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]


def write_events_isolating(events: Sequence[Mapping[str, Any]]) -> WriteResult:
    """Like write_events, but a batch that fails because of a row's content is split in halves,
    each written in its own transaction, down to the rows that fail alone: those come back as
    rejected and every other row is written. Any other error (connection, schema) is raised,
    and the caller keeps the whole batch for later (writes are idempotent)."""
    result = WriteResult()
    batch: list[Mapping[str, Any]] = []
    for event in events:
        if isinstance(event, Mapping):
            batch.append(event)
        else:  # e.g. a spool line holding a JSON list
            result.rejected.append(Rejected(_as_dict(event), "TypeError: not a usage event"))
    _write_halves(batch, result)
    return result


def _as_dict(event: Any) -> dict[str, Any]:
    """The event itself when it is a dict: callers find their rejected events by identity."""
    if isinstance(event, dict):
        return event
    return dict(event) if isinstance(event, Mapping) else {"value": _as_text(event)}


def _write_halves(events: Sequence[Mapping[str, Any]], result: WriteResult) -> None:
    # Rows are cleaned again for each half: only a failing batch pays it, about log2(500) times.
    if not events:
        return
    try:
        write_events(events)
    except Exception as error:
        if not is_row_error(error):
            raise
        if len(events) == 1:
            result.rejected.append(Rejected(_as_dict(events[0]), _describe(error)))
            return
        middle = len(events) // 2
        _write_halves(events[:middle], result)
        _write_halves(events[middle:], result)
        return
    result.written += len(events)


def write_events_reusing_connection(events: list[dict[str, Any]]) -> WriteResult:
    """For the gateway's one ledger-writer thread: keeps the thread's connection open between
    batches (opening one per batch cost milliseconds), and retries a batch once on a fresh
    connection when the kept one has gone bad (database restarted, idle timeout). A second
    failure is raised, and the caller spools the batch. Rows refused for their content come
    back in the result (the caller dead-letters them).
    """
    try:
        return write_events_isolating(events)
    except CONNECTION_ERRORS:
        connection.close()
        return write_events_isolating(events)


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
