"""A synthetic usage ledger for the spend benchmark: planned in Python, made by the database.

The plan is small and built here from a seeded random generator: ~20,000 Claude Code sessions,
each on one key, started in its organization's working hours on a day of the last 35 days
(weekdays busier), lasting 1-10 hours at one of four intensities; and, per UTC hour of the
window, the sessions active in it. An hour gets a share of the N rows proportional to its
active sessions' intensities, spread evenly over the hour, so ids grow with created_at.

On PostgreSQL the rows themselves are made by `INSERT ... SELECT` over `generate_series`, a
million per statement, from three temp tables (sessions, hours, models), with the ledger's
secondary indexes dropped meanwhile and rebuilt at the end, all in one transaction. Every
per-row choice is a pure function of the row number (`hashint8extended`), so a run is
reproducible and the statement needs no sort. On SQLite (small --rows only) the same plan is
expanded in Python.

A row looks like what the gateway writes (proxy/handlers.py): a session's main model (Sonnet
4.6, Opus 4.8, Sonnet 4.5, Opus 4.6) or Claude Code's background Haiku 4.5; the organization's
provider, 2 % failovers to the other; 95.5 % status 200, then 429, 529, 402, 499, 400, 502;
refusals (402, 429) without provider, tokens or cost; prompt caching as Claude Code uses it
(large cache reads, some writes, below the 200k long-context threshold); cost_micros from the
shipped price sheet with the price book's own rounding; a subagent id on a third of the rows of
sessions that ran subagents; 7 % of rows without a session (SDK calls).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
import time
import uuid
import zoneinfo
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from spend_seed import KeyInfo, Tree

from governance.pricing import Rates
from governance.snapshots import build_price_book
from proxy.records import new_request_id
from telemetry.models import UsageRecord

WINDOW = dt.timedelta(days=35)
HOUR = dt.timedelta(hours=1)
CHUNK_ROWS = 1_000_000
SEED = 20261127
MAIN_MODELS = (
    ("claude-sonnet-4-6", 55),
    ("claude-opus-4-8", 30),
    ("claude-sonnet-4-5", 8),
    ("claude-opus-4-6", 7),
)
BACKGROUND_MODEL = "claude-haiku-4-5"
BACKGROUND_SHARE = 0.25
# (status, cumulative share, error type); refusals by the gateway itself are not forwarded.
STATUSES = (
    (200, 0.955, ""),
    (429, 0.975, "rate_limit_error"),
    (529, 0.985, "overloaded_error"),
    (402, 0.990, "billing_error"),
    (499, 0.994, ""),
    (400, 0.997, "invalid_request_error"),
    (502, 1.0, "api_error"),
)
REFUSED = (402, 429)
FAILOVER_SHARE = 0.02
NO_SESSION_SHARE = 0.07
AGENT_ROW_SHARE = 0.35
STREAM_SHARE = 0.88
CLIENT_VERSIONS = ("2.1.332", "2.1.330", "2.1.318")
# Relative chance that a session starts at each local hour (0-23): office hours, some nights.
START_HOURS = (1, 1, 1, 1, 1, 2, 4, 8, 14, 18, 18, 16, 12, 15, 17, 17, 15, 12, 8, 6, 5, 4, 2, 1)
INTENSITIES = (1, 2, 3, 4)  # requests per hour, relative


@dataclass(frozen=True)
class ModelRates:
    idx: int
    name: str
    rates: Rates
    background: bool


@dataclass(frozen=True)
class Session:
    idx: int
    session_id: str
    key: KeyInfo
    model: int  # ModelRates.idx of its main model
    agents: int  # subagents it ran
    agent_prefix: str
    client_version: str


@dataclass
class Hour:
    start: dt.datetime
    seconds: float  # the last hour of the window ends just before "now"
    first_row: int = 0
    rows: int = 0
    sessions: list[int] = field(default_factory=list)  # session idx, repeated by intensity


@dataclass(frozen=True)
class Plan:
    start: dt.datetime
    end: dt.datetime
    rows: int
    models: list[ModelRates]
    sessions: list[Session]
    hours: list[Hour]  # only hours with rows

    @property
    def background_model(self) -> int:
        return next(m.idx for m in self.models if m.background)


def model_rates(at: dt.datetime) -> list[ModelRates]:
    """The benchmark's models at their prices in the shipped price sheet (loaded by the seed)."""
    book = build_price_book()
    names = [name for name, _ in MAIN_MODELS] + [BACKGROUND_MODEL]
    models = []
    for idx, name in enumerate(names):
        price = book.price_for(name, at)
        if price is None:
            raise RuntimeError(f"the price sheet has no price for {name}")
        models.append(ModelRates(idx, name, price.standard, name == BACKGROUND_MODEL))
    return models


def _floor_hour(moment: dt.datetime) -> dt.datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _session_start(
    rng: random.Random, zone: zoneinfo.ZoneInfo, days: Sequence[dt.date]
) -> dt.datetime:
    """A local day (weekdays five times likelier) and a local hour from START_HOURS."""
    day = rng.choices(days, [1 if day.weekday() >= 5 else 5 for day in days])[0]
    hour = rng.choices(range(24), START_HOURS)[0]
    return dt.datetime.combine(day, dt.time(hour, rng.randrange(60)), tzinfo=zone)


def build_plan(tree: Tree, rows: int, now: dt.datetime, sessions: int) -> Plan:
    rng = random.Random(SEED)
    start = _floor_hour(now.astimezone(dt.UTC) - WINDOW)
    end = now.astimezone(dt.UTC) - dt.timedelta(seconds=1)
    hours = [Hour(start + i * HOUR, 3600.0) for i in range(math.ceil((end - start) / HOUR))]
    hours[-1].seconds = (end - hours[-1].start).total_seconds()
    models = model_rates(now)
    main = [m.idx for m in models if not m.background]
    main_weights = [weight for _, weight in MAIN_MODELS]
    keys = list(tree.keys)
    rng.shuffle(keys)  # heavy users in every organization
    # Some keys are used far more than others: weight 1 / (1 + rank / 25).
    key_weights = list(itertools.accumulate(1 / (1 + rank / 25) for rank in range(len(keys))))
    zones = {name: zoneinfo.ZoneInfo(name) for name in {key.timezone for key in keys}}
    days = {
        name: [
            start.astimezone(zone).date() + dt.timedelta(days=i)
            for i in range((end.astimezone(zone).date() - start.astimezone(zone).date()).days + 1)
        ]
        for name, zone in zones.items()
    }
    planned: list[Session] = []
    while len(planned) < sessions:
        key = rng.choices(keys, cum_weights=key_weights)[0]
        began = _session_start(rng, zones[key.timezone], days[key.timezone])
        first = math.floor((began - start) / HOUR)
        last = min(first + 1 + min(int(rng.expovariate(1 / 1.8)), 9), len(hours))
        if first < 0 or first >= len(hours):
            continue  # started outside the window
        idx = len(planned)
        agents = rng.choice((0, 0, 0, 1, 2, 3, 5))
        planned.append(
            Session(
                idx=idx,
                session_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                key=key,
                model=rng.choices(main, main_weights)[0],
                agents=agents,
                agent_prefix=f"a{rng.getrandbits(40):010x}-",
                client_version=rng.choice(CLIENT_VERSIONS),
            )
        )
        intensity = rng.choice(INTENSITIES)
        for hour in hours[first:last]:
            hour.sessions.extend([idx] * intensity)
    _share_rows(hours, rows)
    return Plan(start, end, rows, models, planned, [h for h in hours if h.rows])


def _share_rows(hours: list[Hour], rows: int) -> None:
    """Rows per hour in proportion to active intensity (largest remainder, exact total)."""
    weights = [len(h.sessions) * h.seconds / 3600 for h in hours]
    total = sum(weights) or 1.0
    exact = [rows * w / total for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(hours)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: rows - sum(counts)]:
        counts[i] += 1
    first = 0
    for hour, count in zip(hours, counts, strict=True):
        hour.first_row, hour.rows = first, count
        first += count


# --- PostgreSQL: rows made by the database --------------------------------------------------

COLUMNS = (
    "id", "request_id", "created_at", "organization_id", "team_id", "project_id", "key_id",
    "parent_key_id", "key_name", "route", "requested_model", "routed_model", "served_model",
    "provider", "status", "error_type", "error_message", "input_tokens", "output_tokens",
    "cache_read_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "cost_micros",
    "cost_estimated", "latency_ms", "ttfb_ms",
    "stream", "attempts", "downgraded_from", "client_disconnected", "upstream_request_id",
    "session_id", "agent_id", "parent_agent_id", "client_name", "client_version",
)  # fmt: skip
# Ledger columns the generator has no opinion on (added after it was written): their defaults,
# so a new column never breaks the benchmark.
FILLER: tuple[tuple[str, Any], ...] = tuple(
    (f.column or f.name, f.get_default())
    for f in UsageRecord._meta.concrete_fields
    if f.column not in COLUMNS and f.name not in COLUMNS
)
ALL_COLUMNS = COLUMNS + tuple(column for column, _ in FILLER)


def _sql_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "NULL"
    return "'" + str(value).replace("'", "''") + "'"


TEMP_TABLES = """
DROP TABLE IF EXISTS bench_sessions, bench_hours, bench_models;
CREATE TEMP TABLE bench_sessions (
    idx int PRIMARY KEY, session_id text, key_id bigint, organization_id bigint,
    team_id bigint, project_id bigint, parent_key_id bigint, key_name text, provider text,
    alt_provider text, model int, agents int, agent_prefix text, client_version text
);
CREATE TEMP TABLE bench_hours (
    first_row bigint PRIMARY KEY, rows bigint, seg_start timestamptz, seg_seconds float8,
    sessions int[]
);
CREATE TEMP TABLE bench_models (
    idx int PRIMARY KEY, name text, background bool, r_in bigint, r_out bigint, r_cw5 bigint,
    r_cw1h bigint, r_cr bigint
);
-- A uniform number in [0, 1) from (row number, draw): the same on every run.
CREATE OR REPLACE FUNCTION pg_temp.u(bigint, int) RETURNS float8
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT ((hashint8extended($1, $2) >> 11) & 9007199254740991)::float8
                 / 9007199254740992 $$;
"""

# Statuses and refusals come from STATUSES / REFUSED (see _status_sql).
CHUNK_SQL = """
WITH picked AS (
    SELECT g, h.seg_start, h.seg_seconds, h.first_row, h.rows,
           h.sessions[1 + floor(pg_temp.u(g, 1) * cardinality(h.sessions))::int] AS sidx
    FROM bench_hours h
    CROSS JOIN LATERAL generate_series(
        greatest(h.first_row, %(lo)s), least(h.first_row + h.rows, %(hi)s) - 1) AS g
    WHERE h.first_row < %(hi)s AND h.first_row + h.rows > %(lo)s
), drawn AS (
    SELECT p.g,
           p.seg_start + make_interval(
               secs => (p.g - p.first_row + 0.9 * pg_temp.u(p.g, 2)) * p.seg_seconds / p.rows
           ) AS at,
           s.*,
           CASE WHEN pg_temp.u(p.g, 3) < %(background_share)s THEN %(background)s
                ELSE s.model END AS midx,
           {status} AS status,
           pg_temp.u(p.g, 5) < %(failover_share)s AS failover
    FROM picked p JOIN bench_sessions s ON s.idx = p.sidx
), shaped AS (
    SELECT d.*, m.name AS model_name, m.background, m.r_in, m.r_out, m.r_cw5, m.r_cw1h, m.r_cr,
           d.status NOT IN ({refused}) AS forwarded,
           d.status IN (200, 499) AS metered
    FROM drawn d JOIN bench_models m ON m.idx = d.midx
), tokens AS (
    SELECT t.*,
        CASE WHEN metered THEN 1 + floor(pg_temp.u(g, 6) ^ 2 * 4000)::bigint ELSE 0 END AS t_in,
        CASE WHEN metered THEN floor(exp(pg_temp.u(g, 7)
                 * ln(CASE WHEN background THEN 800 ELSE 6000 END))
                 / CASE WHEN status = 499 THEN 2 ELSE 1 END)::bigint
             ELSE 0 END AS t_out,
        CASE WHEN metered THEN floor(pg_temp.u(g, 8)
                 * CASE WHEN background THEN 30000 ELSE 170000 END)::bigint
             ELSE 0 END AS t_cr,
        CASE WHEN NOT metered THEN 0
             WHEN pg_temp.u(g, 9) < 0.3 THEN floor(pg_temp.u(g, 10) * 20000)::bigint
             ELSE floor(pg_temp.u(g, 10) * 1500)::bigint END AS t_cw5,
        CASE WHEN metered AND pg_temp.u(g, 11) < 0.03
             THEN floor(pg_temp.u(g, 12) * 5000)::bigint ELSE 0 END AS t_cw1h,
        pg_temp.u(g, 13) < %(stream_share)s AS streamed,
        CASE WHEN pg_temp.u(g, 14) < %(no_session_share)s THEN '' ELSE session_id END AS sid
    FROM shaped t
)
INSERT INTO telemetry_usagerecord ({columns})
SELECT
    %(base_id)s + g + 1,
    'gwreq_' || md5('spend-bench-' || g),
    at,
    organization_id, team_id, project_id, key_id, parent_key_id, key_name,
    'anthropic.messages',
    model_name, model_name,
    CASE WHEN forwarded THEN model_name ELSE '' END,
    CASE WHEN NOT forwarded THEN '' WHEN failover THEN alt_provider ELSE provider END,
    status,
    {error_type},
    '',
    t_in, t_out, t_cr, t_cw5, t_cw1h,
    (t_in * r_in + t_out * r_out + t_cr * r_cr + t_cw5 * r_cw5 + t_cw1h * r_cw1h + 500000)
        / 1000000,
    false,
    CASE WHEN forwarded THEN 400 + floor(pg_temp.u(g, 15) * 2000)::int + t_out::int * 15
         ELSE 1 + floor(pg_temp.u(g, 15) * 5)::int END,
    CASE WHEN forwarded AND streamed THEN 250 + floor(pg_temp.u(g, 16) * 1500)::int END,
    streamed,
    CASE WHEN failover OR status = 529 THEN 2 ELSE 1 END,
    '',
    status = 499,
    CASE WHEN forwarded THEN 'req_011C' || left(md5('upstream-' || g), 20) ELSE '' END,
    sid,
    CASE WHEN sid <> '' AND agents > 0 AND pg_temp.u(g, 17) < %(agent_share)s
         THEN agent_prefix || floor(pg_temp.u(g, 18) * agents)::int ELSE '' END,
    '',
    CASE WHEN sid = '' THEN 'Anthropic/Python' ELSE 'claude-cli' END,
    CASE WHEN sid = '' THEN '2.14.0' ELSE client_version END{filler}
FROM tokens
"""


def _status_sql() -> str:
    draw = "pg_temp.u(p.g, 4)"
    cases = " ".join(f"WHEN {draw} < {share} THEN {status}" for status, share, _ in STATUSES[:-1])
    return f"CASE {cases} ELSE {STATUSES[-1][0]} END"


def _error_type_sql() -> str:
    cases = " ".join(f"WHEN {status} THEN '{kind}'" for status, _, kind in STATUSES if kind)
    return f"CASE status {cases} ELSE '' END"


def chunk_sql() -> str:
    return CHUNK_SQL.format(
        status=_status_sql(),
        refused=", ".join(str(status) for status in REFUSED),
        error_type=_error_type_sql(),
        columns=", ".join(ALL_COLUMNS),
        filler="".join(f",\n    {_sql_literal(value)}" for _, value in FILLER),
    )


def _session_values(s: Session) -> tuple[Any, ...]:
    k = s.key
    return (
        s.idx,
        s.session_id,
        k.key_id,
        k.organization_id,
        k.team_id,
        k.project_id,
        k.parent_key_id,
        k.name,
        k.provider,
        k.alt_provider,
        s.model,
        s.agents,
        s.agent_prefix,
        s.client_version,
    )


def _hour_values(h: Hour) -> tuple[Any, ...]:
    return (h.first_row, h.rows, h.start, h.seconds, h.sessions)


def _model_values(m: ModelRates) -> tuple[Any, ...]:
    r = m.rates
    return (
        m.idx,
        m.name,
        m.background,
        r.input,
        r.output,
        r.cache_write_5m,
        r.cache_write_1h,
        r.cache_read,
    )


def _load_temp_tables(cursor: Any, plan: Plan) -> None:
    cursor.execute(TEMP_TABLES)
    for table, rows in (
        ("bench_sessions", [_session_values(s) for s in plan.sessions]),
        (
            "bench_hours",
            [(h.first_row, h.rows, h.start, h.seconds, h.sessions) for h in plan.hours],
        ),
        ("bench_models", [_model_values(m) for m in plan.models]),
    ):
        values = ", ".join(["%s"] * len(rows[0]))
        cursor.executemany(f"INSERT INTO {table} VALUES ({values})", rows)  # noqa: S608
    cursor.execute("ANALYZE bench_sessions, bench_hours, bench_models")


Progress = Callable[[int, int, float], None]  # (rows done, rows in all, seconds so far)


@dataclass(frozen=True)
class SecondaryIndex:
    name: str
    drop: str
    create: str


def secondary_indexes(cursor: Any, table: str) -> list[SecondaryIndex]:
    """Every index of `table` but the primary key's, with the SQL that drops and remakes it
    (a unique constraint's index through its constraint)."""
    cursor.execute(
        """
        SELECT i.relname, c.conname, pg_get_indexdef(i.oid), pg_get_constraintdef(c.oid)
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        LEFT JOIN pg_constraint c ON c.conindid = i.oid AND c.conrelid = x.indrelid
        WHERE x.indrelid = %s::regclass AND NOT x.indisprimary
        ORDER BY i.relname
        """,
        [table],
    )
    found = []
    for index, constraint, index_sql, constraint_sql in cursor.fetchall():
        if constraint:
            drop = f"ALTER TABLE {table} DROP CONSTRAINT {connection.ops.quote_name(constraint)}"
            create = (
                f"ALTER TABLE {table} ADD CONSTRAINT "
                f"{connection.ops.quote_name(constraint)} {constraint_sql}"
            )
        else:
            drop, create = f"DROP INDEX {connection.ops.quote_name(index)}", index_sql
        found.append(SecondaryIndex(index, drop, create))
    return found


@dataclass
class Generated:
    insert_seconds: float = 0.0
    index_seconds: float = 0.0
    indexes: int = 0


def generate_postgresql(
    plan: Plan, base_id: int, progress: Progress, say: Callable[[str], None]
) -> Generated:
    """INSERT ... SELECT the plan's rows, CHUNK_ROWS per statement, with the ledger's secondary
    indexes dropped meanwhile and rebuilt at the end (10x faster than maintaining them).

    Call it inside a transaction: DDL is transactional in PostgreSQL, so an error or Ctrl-C
    rolls everything back, indexes included, and the schema is never left without them.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("generate_postgresql must run inside transaction.atomic()")
    sql = chunk_sql()
    params: dict[str, Any] = {
        "base_id": base_id,
        "background": plan.background_model,
        "background_share": BACKGROUND_SHARE,
        "failover_share": FAILOVER_SHARE,
        "stream_share": STREAM_SHARE,
        "no_session_share": NO_SESSION_SHARE,
        "agent_share": AGENT_ROW_SHARE,
    }
    table = connection.ops.quote_name(UsageRecord._meta.db_table)
    result = Generated()
    with connection.cursor() as cursor:
        # This transaction only.
        cursor.execute(
            "SET LOCAL synchronous_commit = off; SET LOCAL work_mem = '64MB'; "
            "SET LOCAL maintenance_work_mem = '1GB'"
        )
        _load_temp_tables(cursor, plan)
        indexes = secondary_indexes(cursor, table)
        for index in indexes:
            cursor.execute(index.drop)
        started = time.perf_counter()
        for lo in range(0, plan.rows, CHUNK_ROWS):
            hi = min(lo + CHUNK_ROWS, plan.rows)
            cursor.execute(sql, {**params, "lo": lo, "hi": hi})
            progress(hi, plan.rows, time.perf_counter() - started)
        result.insert_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for index in indexes:
            began = time.perf_counter()
            cursor.execute(index.create)
            say(f"  rebuilt index {index.name} in {time.perf_counter() - began:.1f} s")
        result.index_seconds, result.indexes = time.perf_counter() - started, len(indexes)
        cursor.execute("DROP TABLE bench_sessions, bench_hours, bench_models")
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
            f"(SELECT max(id) FROM {table}))"
        )
    return result


# --- SQLite (small runs): the same plan expanded in Python ----------------------------------


def _pick_status(u: float) -> tuple[int, str]:
    for status, share, kind in STATUSES:
        if u < share:
            return status, kind
    return STATUSES[-1][0], STATUSES[-1][2]


def draw_row(
    g: int, session: Session, at: dt.datetime, *, plan: Plan, rng: random.Random, base_id: int
) -> dict[str, Any]:
    """One ledger row (COLUMNS), drawn the way CHUNK_SQL draws it."""
    background = rng.random() < BACKGROUND_SHARE
    model = plan.models[plan.background_model if background else session.model]
    status, error_type = _pick_status(rng.random())
    forwarded, metered = status not in REFUSED, status in (200, 499)
    failover = rng.random() < FAILOVER_SHARE
    sid = "" if rng.random() < NO_SESSION_SHARE else session.session_id
    t_in = t_out = t_cr = t_cw5 = t_cw1h = 0
    if metered:
        t_in = 1 + int(rng.random() ** 2 * 4000)
        t_out = int(math.exp(rng.random() * math.log(800 if background else 6000)))
        t_out //= 2 if status == 499 else 1
        t_cr = int(rng.random() * (30000 if background else 170000))
        t_cw5 = int(rng.random() * (20000 if rng.random() < 0.3 else 1500))
        t_cw1h = int(rng.random() * 5000) if rng.random() < 0.03 else 0
    r = model.rates
    picos = (
        t_in * r.input
        + t_out * r.output
        + t_cr * r.cache_read
        + t_cw5 * r.cache_write_5m
        + t_cw1h * r.cache_write_1h
    )
    streamed = rng.random() < STREAM_SHARE
    key = session.key
    agent = ""
    if sid and session.agents and rng.random() < AGENT_ROW_SHARE:
        agent = f"{session.agent_prefix}{rng.randrange(session.agents)}"
    return {
        "id": base_id + g + 1,
        "request_id": f"gwreq_{uuid.UUID(int=rng.getrandbits(128)).hex}",
        "created_at": at,
        "organization_id": key.organization_id,
        "team_id": key.team_id,
        "project_id": key.project_id,
        "key_id": key.key_id,
        "parent_key_id": key.parent_key_id,
        "key_name": key.name,
        "route": "anthropic.messages",
        "requested_model": model.name,
        "routed_model": model.name,
        "served_model": model.name if forwarded else "",
        "provider": "" if not forwarded else key.alt_provider if failover else key.provider,
        "status": status,
        "error_type": error_type,
        "error_message": "",
        "input_tokens": t_in,
        "output_tokens": t_out,
        "cache_read_tokens": t_cr,
        "cache_write_5m_tokens": t_cw5,
        "cache_write_1h_tokens": t_cw1h,
        "cost_micros": (picos + 500_000) // 1_000_000,
        "cost_estimated": False,
        "latency_ms": 400 + rng.randrange(2000) + t_out * 15 if forwarded else 1 + rng.randrange(5),
        "ttfb_ms": 250 + rng.randrange(1500) if forwarded and streamed else None,
        "stream": streamed,
        "attempts": 2 if failover or status == 529 else 1,
        "downgraded_from": "",
        "client_disconnected": status == 499,
        "upstream_request_id": f"req_011C{rng.getrandbits(80):020x}" if forwarded else "",
        "session_id": sid,
        "agent_id": agent,
        "parent_agent_id": "",
        "client_name": "claude-cli" if sid else "Anthropic/Python",
        "client_version": session.client_version if sid else "2.14.0",
    }


def python_rows(plan: Plan, base_id: int) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(SEED + 1)
    adapt = connection.ops.adapt_datetimefield_value
    for hour in plan.hours:
        for g in range(hour.first_row, hour.first_row + hour.rows):
            session = plan.sessions[rng.choice(hour.sessions)]
            offset = (g - hour.first_row + 0.9 * rng.random()) * hour.seconds / hour.rows
            at = hour.start + dt.timedelta(seconds=offset)
            row = draw_row(g, session, at, plan=plan, rng=rng, base_id=base_id)
            row["created_at"] = adapt(row["created_at"])
            yield tuple(row[name] for name in COLUMNS) + tuple(value for _, value in FILLER)


def generate_python(plan: Plan, base_id: int, progress: Progress) -> None:
    table = connection.ops.quote_name(UsageRecord._meta.db_table)
    sql = (
        f"INSERT INTO {table} ({', '.join(ALL_COLUMNS)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(ALL_COLUMNS))})"
    )
    started = time.perf_counter()
    rows = python_rows(plan, base_id)
    done = 0
    with connection.cursor() as cursor:
        while batch := list(itertools.islice(rows, 10_000)):
            with transaction.atomic():  # SQLite commits (and syncs) every statement otherwise
                cursor.executemany(sql, batch)
            done += len(batch)
            if done % 100_000 == 0 or done == plan.rows:
                progress(done, plan.rows, time.perf_counter() - started)


# --- the gateway's usage events, for the writer benchmark -----------------------------------


class EventFactory:
    """Usage event dicts shaped like proxy/handlers.py's (every ledger field, `created_at` an
    aware datetime, a request id made by the gateway's own `new_request_id`), for the plan's
    sessions, now."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self._rng = random.Random(time.time_ns())

    def event(self) -> dict[str, Any]:
        rng = self._rng
        session = self._plan.sessions[rng.randrange(len(self._plan.sessions))]
        event = draw_row(0, session, dt.datetime.now(dt.UTC), plan=self._plan, rng=rng, base_id=0)
        del event["id"]
        # The gateway's ids (time first) decide where inserts land in the unique index.
        event["request_id"] = new_request_id()
        return event

    def batch(self, size: int) -> list[dict[str, Any]]:
        return [self.event() for _ in range(size)]
