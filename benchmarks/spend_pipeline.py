"""Benchmark the spend pipeline on a large usage ledger: writing, rolling up, rendering.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gw_spendbench \\
        .venv/bin/python benchmarks/spend_pipeline.py             # 10 million rows
    .venv/bin/python benchmarks/spend_pipeline.py --quick         # 100,000 rows, SQLite if no URL

What it does, in order: migrates the database (PostgreSQL; SQLite only for small --rows), seeds
an organization tree through the governance services (benchmarks/spend_seed.py), fills the
usage ledger with N realistic rows over the last 35 days (benchmarks/spend_ledger.py; on
PostgreSQL by INSERT ... SELECT in chunks of a million), rolls it up with
telemetry.rollups.run_rollups and syncs the budget periods; measures the ledger writer's
sustained insert rate through telemetry.ledger.write_events (batches of 500 gateway-shaped
events, on top of the big table) and through proxy.usage.UsageBuffer at a fixed offered rate;
rolls up what that added; then times the spend dashboard and /logs pages with Django's test
client (logged-in superuser) and, unless --no-http, through a uvicorn server.

Every page is checked: HTTP 200 and the figures the page shows equal what the ledger holds
(totals summed straight from the ledger, the newest matching row's request id). The exit status
is 1 when a check fails (a missed target is reported, not an error), 2 on bad arguments or a
database it must not use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import itertools
import json
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import machine as machine_info
from processes import manage

if TYPE_CHECKING:
    import spend_pages
    from spend_ledger import EventFactory, Plan
    from spend_seed import Tree

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
DEFAULT_ROWS = 10_000_000
QUICK_ROWS = 100_000
SQLITE_MAX_ROWS = 200_000
WRITER_TARGET = 5_000  # records per second
PAGE_TARGET = 1.0  # seconds


# --- results ---------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Step:
    name: str
    seconds: float
    rows: int = 0
    note: str = ""

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass
class WriterResult:
    name: str
    records: int
    seconds: float  # what the rate is measured over
    rate: float
    note: str = ""

    @property
    def met(self) -> bool:
        return self.rate >= WRITER_TARGET


@dataclass
class PageResult:
    name: str
    path: str
    via: str  # "client" or "http"
    first: float
    runs: list[float] = field(default_factory=list)
    size: int = 0

    @property
    def p50(self) -> float:
        return statistics.median(self.runs) if self.runs else self.first

    @property
    def worst(self) -> float:
        return max(self.runs) if self.runs else self.first

    @property
    def met(self) -> bool:
        return self.p50 < PAGE_TARGET


@dataclass
class Results:
    machine: dict[str, Any]
    args: dict[str, str]
    steps: list[Step] = field(default_factory=list)
    writers: list[WriterResult] = field(default_factory=list)
    pages: list[PageResult] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, ok, detail))
        print(f"  check {'OK' if ok else 'FAILED'}: {name}{f' ({detail})' if detail else ''}")
        return ok


def say(text: str) -> None:
    print(text, flush=True)


# --- environment (before Django is set up) --------------------------------------------------


def refuse(message: str) -> NoReturn:
    print(f"spend_pipeline.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def database_url(args: argparse.Namespace, workdir: Path) -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        if args.rows > SQLITE_MAX_ROWS:
            refuse(
                f"{args.rows:,} rows need PostgreSQL: set DATABASE_URL, e.g. "
                "DATABASE_URL=postgres://postgres@127.0.0.1:5432/gw_spendbench "
                f"(or pass --rows {SQLITE_MAX_ROWS:,} or fewer, or --quick, for a SQLite run)"
            )
        return f"sqlite:///{workdir / 'spend.sqlite3'}"
    if url.startswith("sqlite") and args.rows > SQLITE_MAX_ROWS:
        refuse(
            f"SQLite is for small runs only (--rows {SQLITE_MAX_ROWS:,} or fewer): generating "
            f"{args.rows:,} rows needs PostgreSQL (DATABASE_URL=postgres://...)"
        )
    if not url.startswith(("postgres", "sqlite")):
        refuse(f"DATABASE_URL must be PostgreSQL or SQLite, not {url.split(':')[0]}")
    return url


def bench_env(url: str, workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = url
    env["DJANGO_SETTINGS_MODULE"] = "gatewaysite.settings"
    env.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    env["DJANGO_DEBUG"] = "0"
    env["LOG_LEVEL"] = "WARNING"
    env["GATEWAY_SPOOL_DIR"] = str(workdir / "spool")
    env["GATEWAY_POLICY_VERSION_FILE"] = str(workdir / "policy-version")
    env["GATEWAY_IN_PROCESS_JOBS"] = "false"  # the uvicorn server must not run rollups itself
    env["PYTHONUNBUFFERED"] = "1"
    return env


def ensure_postgresql_database(url: str) -> None:
    """Create the database named in the URL if it does not exist (the server must)."""
    import environ  # django-environ
    import psycopg
    from psycopg import sql

    config = environ.Env.db_url_config(url)
    with psycopg.connect(
        host=config.get("HOST") or HOST,
        port=config.get("PORT") or 5432,
        user=config.get("USER") or None,
        password=config.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]])
        if found.fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config["NAME"])))
            say(f"created database {config['NAME']}")


def migrate(env: dict[str, str]) -> None:
    manage(env, "migrate", "--noinput", "-v", "0")


def machine() -> dict[str, Any]:
    return machine_info.describe()


# --- ledger ----------------------------------------------------------------------------------


def is_postgresql() -> bool:
    from django.db import connection

    return connection.vendor == "postgresql"


def ledger_rows() -> int:
    from telemetry.models import UsageRecord

    return UsageRecord.objects.count()


def max_id() -> int:
    from django.db.models import Max

    from telemetry.models import UsageRecord

    return int(UsageRecord.objects.aggregate(top=Max("id"))["top"] or 0)


def derived_models(*modules: str) -> list[type[Any]]:
    """The telemetry models defined in `modules` (e.g. "rollups"): whatever they are today."""
    from django.apps import apps

    wanted = {f"telemetry.models.{name}" for name in modules}
    return [m for m in apps.get_app_config("telemetry").get_models() if m.__module__ in wanted]


def empty_tables(models: list[type[Any]]) -> None:
    from django.db import connection

    tables = [connection.ops.quote_name(m._meta.db_table) for m in models]
    with connection.cursor() as cursor:
        if is_postgresql():
            cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")  # noqa: S608


def clear_ledger() -> None:
    """Empty the ledger and everything derived from it (rollups, cursors, period records)."""
    empty_tables(derived_models("usage", "rollups", "periods"))


def progress_line(label: str) -> Callable[[int, int, float], None]:
    def report(done: int, total: int, seconds: float) -> None:
        rate = done / seconds if seconds else 0.0
        left = (total - done) / rate if rate else 0.0
        say(
            f"  {label}: {done:>12,} / {total:,} rows in {seconds:7.1f} s "
            f"({rate:,.0f} rows/s), about {left / 60:.1f} min left"
        )

    return report


def generate(plan: Plan, existing: int, results: Results) -> None:
    """Empty the ledger and fill it with the plan's rows (on PostgreSQL in one transaction)."""
    import spend_ledger
    from django.db import transaction

    if existing:
        say(f"emptying the ledger ({existing:,} rows) and what is derived from it")
    say(
        f"generating {plan.rows:,} ledger rows ({len(plan.sessions):,} sessions, "
        f"{plan.start:%Y-%m-%d %H:%M} to {plan.end:%Y-%m-%d %H:%M} UTC)"
    )
    started = time.perf_counter()
    if is_postgresql():
        with transaction.atomic():
            clear_ledger()
            made = spend_ledger.generate_postgresql(plan, 0, progress_line("inserted"), say)
        results.steps.append(
            Step("insert the ledger rows", made.insert_seconds, plan.rows, "indexes dropped")
        )
        results.steps.append(
            Step(f"rebuild the ledger's {made.indexes} secondary indexes", made.index_seconds)
        )
    else:
        clear_ledger()
        spend_ledger.generate_python(plan, 0, progress_line("inserted"))
    results.steps.append(Step("generate the ledger", time.perf_counter() - started, plan.rows))
    started = time.perf_counter()
    vacuum_analyze()
    note = "as autovacuum leaves a table"
    results.steps.append(
        Step("VACUUM ANALYZE the ledger", time.perf_counter() - started, note=note)
    )


def vacuum_analyze() -> None:
    from django.db import connection

    from telemetry.models import UsageRecord

    table = connection.ops.quote_name(UsageRecord._meta.db_table)
    with connection.cursor() as cursor:
        # As autovacuum leaves a table that grew over weeks: statistics for the planner and
        # the visibility map that index-only scans need.
        cursor.execute(f"VACUUM (ANALYZE) {table}" if is_postgresql() else f"ANALYZE {table}")


def check_ledger(plan: Plan, results: Results) -> None:
    """Row count, ids growing with time, and costs as the price book computes them."""
    from django.db.models import Q

    from governance.pricing import Usage
    from governance.snapshots import build_price_book
    from telemetry.models import UsageRecord

    rows = ledger_rows()
    results.check("ledger holds at least the rows asked for", rows >= plan.rows, f"{rows:,} rows")
    # Only the generated rows: rows the writer benchmark added (here or in an earlier --reuse
    # run) carry their request's start time and are written at its end, like the gateway's, so
    # their ids need not follow created_at.
    top = min(max_id(), plan.rows)
    backwards = 0
    for start in (1, top // 2, max(top - 50_000, 1)):
        times = list(
            UsageRecord.objects.filter(id__gte=start, id__lt=start + 50_000)
            .order_by("id")
            .values_list("created_at", flat=True)
        )
        backwards += sum(1 for a, b in itertools.pairwise(times) if b < a)
    results.check(
        "ids grow with created_at (3 samples of 50,000 rows)",
        backwards == 0,
        f"{backwards} out of order",
    )
    book = build_price_book()
    step = max(top // 500, 1)
    sample = UsageRecord.objects.filter(Q(id__in=range(1, top + 1, step)), status=200).only(
        "served_model",
        "created_at",
        "cost_micros",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
    )
    wrong = 0
    checked = 0
    for row in sample:
        usage = Usage(
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cache_write_5m_tokens=row.cache_write_5m_tokens,
            cache_write_1h_tokens=row.cache_write_1h_tokens,
            cache_read_tokens=row.cache_read_tokens,
        )
        checked += 1
        wrong += book.cost_micros(row.served_model, usage, row.created_at) != row.cost_micros
    results.check(
        "sampled rows cost what the price book says",
        checked > 0 and wrong == 0,
        f"{wrong} of {checked} differ",
    )


# --- rollups and periods ---------------------------------------------------------------------


@contextlib.contextmanager
def cursor_progress(total_id: int, every: float = 30.0) -> Iterator[None]:
    """Print where the rollup cursor is every `every` seconds (from a thread of its own)."""
    stop = threading.Event()

    def watch() -> None:
        from django.db import connection

        from telemetry import rollups

        started = time.perf_counter()
        first = rollups.cursor_position()
        try:
            while not stop.wait(every):
                at = rollups.cursor_position()
                seconds = time.perf_counter() - started
                say(
                    f"  rollup: cursor at id {at:,} of {total_id:,} after {seconds:.0f} s "
                    f"({(at - first) / seconds:,.0f} rows/s)"
                )
        finally:
            connection.close()

    thread = threading.Thread(target=watch, name="rollup-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def roll_up(results: Results, label: str) -> None:
    from telemetry import rollups

    top = max_id()
    say(f"{label}: rolling the ledger up from id {rollups.cursor_position():,} to {top:,}")
    started = time.perf_counter()
    with cursor_progress(top):
        run = rollups.run_rollups(settle_seconds=0)
    seconds = time.perf_counter() - started
    results.steps.append(Step(label, seconds, run.rows, f"{run.batches} batches"))
    say(
        f"  {run.rows:,} rows in {seconds:.1f} s ({run.rows / seconds if seconds else 0:,.0f} "
        f"rows/s, {run.batches} batches)"
    )
    check_rollups(results)


def check_rollups(results: Results) -> None:
    """Hour cells and day cells each add up to the ledger below the cursor, exactly."""
    from django.db.models import Count, Sum

    from telemetry import rollups
    from telemetry.models import SpendRollup, UsageRecord

    cursor = rollups.cursor_position()
    ledger = UsageRecord.objects.filter(id__lte=cursor).aggregate(
        n=Count("id"), cost=Sum("cost_micros")
    )
    expected = (ledger["n"], ledger["cost"] or 0)
    for granularity in ("hour", "day"):
        cells = SpendRollup.objects.filter(granularity=granularity).aggregate(
            n=Sum("requests"), cost=Sum("cost_micros")
        )
        got = (cells["n"] or 0, cells["cost"] or 0)
        results.check(
            f"{granularity} rollups add up to the ledger",
            got == expected,
            f"{got[0]:,} requests, {got[1]:,} µ$ vs {expected[0]:,}, {expected[1]:,}",
        )


def sync_periods(tree: Tree, results: Results, label: str) -> None:
    from django.db.models import Sum

    from governance.models import Budget
    from telemetry import periods
    from telemetry.models import BudgetPeriodRecord, UsageRecord

    say(f"{label}: {tree.budgets} budgets")
    now = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    synced = periods.sync_budget_periods(now=now)
    seconds = time.perf_counter() - started
    results.steps.append(Step(label, seconds, note=f"{synced.budgets} budgets"))
    say(f"  {synced.budgets} budgets in {seconds:.1f} s")
    records = BudgetPeriodRecord.objects.filter(closed=False).count()
    results.check(
        "one open period record per budget",
        records == tree.budgets,
        f"{records} records, {tree.budgets} budgets",
    )
    org_id = tree.organizations["bench-acme"]
    budget = Budget.objects.select_related("organization").get(
        organization_id=org_id, team=None, project=None, virtual_key=None, model_patterns=[]
    )
    window = periods.current_window(budget, now)
    spent = UsageRecord.objects.filter(
        organization_id=org_id, created_at__gte=window.start, created_at__lt=window.end
    ).aggregate(cost=Sum("cost_micros"))["cost"]
    record = BudgetPeriodRecord.objects.filter(budget_id=budget.pk, period_label=window.label)
    recorded = record.values_list("spent_micros", flat=True).first()
    results.check(
        "the organization budget's period record holds its month's ledger spend",
        recorded == (spent or 0),
        f"{recorded if recorded is None else f'{recorded:,}'} vs {spent or 0:,} µ$",
    )


# --- the ledger writer -----------------------------------------------------------------------


def rows_above(top: int) -> int:
    from telemetry.models import UsageRecord

    return UsageRecord.objects.filter(id__gt=top).count()


def measure_write_events(
    factory: EventFactory, seconds: float, batch_size: int, results: Results
) -> None:
    """telemetry.ledger.write_events(batch) back to back; only the calls are timed."""
    from telemetry import ledger

    say(f"ledger writer: write_events, batches of {batch_size}, {seconds:.0f} s")
    top = max_id()
    durations: list[float] = []
    written_at: list[float] = []
    sent = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        batch = factory.batch(batch_size)  # ~30 µs an event, not timed
        before = time.perf_counter()
        ledger.write_events(batch)
        durations.append(time.perf_counter() - before)
        written_at.append(time.perf_counter() - started)
        sent += len(batch)
    wall = time.perf_counter() - started
    busy = sum(durations)
    thirds = [
        batch_size * len(part) / sum(part)
        for part in (durations[: len(durations) // 3], durations[-(len(durations) // 3) :])
        if part
    ]
    ordered = sorted(durations)
    note = (
        f"{len(durations)} batches: p50 {ordered[len(ordered) // 2] * 1000:.0f} ms, "
        f"p99 {ordered[int(len(ordered) * 0.99)] * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"
        f" per batch; first third {thirds[0]:,.0f}/s, last third {thirds[-1]:,.0f}/s; "
        f"{sent / wall:,.0f}/s counting the test's own event building"
    )
    name = f"write_events, {batch_size}/batch"
    results.writers.append(WriterResult(name, sent, busy, sent / busy, note))
    say(f"  {sent:,} records in {busy:.1f} s of writing: {sent / busy:,.0f} records/s ({note})")
    written = rows_above(top)
    results.check(
        "write_events wrote every record once",
        written == sent,
        f"{written:,} rows for {sent:,} events",
    )


def gateway_writer() -> tuple[Callable[[list[dict[str, Any]]], Any], dict[str, Any]]:
    """The writer (and buffer options) proxy/runtime.py gives the UsageBuffer."""
    from telemetry import ledger

    return ledger.write_events_reusing_connection, {"release": ledger.close_connection}


async def _offer(
    factory: EventFactory, rate: float, seconds: float, spool: Path
) -> tuple[int, float, float, int, int]:
    """put() events at `rate` for `seconds`, then close(). Returns (sent, offer seconds,
    total seconds, written, spooled)."""
    from proxy.usage import UsageBuffer

    writer, options = gateway_writer()
    buffer = UsageBuffer(writer, spool, **options)
    events = [factory.event() for _ in range(int(rate * seconds))]  # built before the clock
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0
    while sent < len(events):
        due = min(int((loop.time() - started) * rate), len(events))
        for event in events[sent:due]:
            event["created_at"] = dt.datetime.now(dt.UTC)
            buffer.put(event)
        sent = max(sent, due)
        await asyncio.sleep(0.005)
    offered = loop.time() - started
    await buffer.close()
    return sent, offered, loop.time() - started, buffer.written, buffer.spooled


def measure_usage_buffer(
    factory: EventFactory, rate: float, seconds: float, workdir: Path, results: Results
) -> None:
    say(f"UsageBuffer: offering {rate:,.0f} events/s for {seconds:.0f} s from an asyncio loop")
    top = max_id()
    sent, offered, total, written, spooled = asyncio.run(
        _offer(factory, rate, seconds, workdir / "spool")
    )
    achieved = written / total if total else 0.0
    note = (
        f"offered {rate:,.0f}/s for {offered:.1f} s; closing drained the rest in "
        f"{total - offered:.1f} s; {spooled:,} spooled"
    )
    results.writers.append(WriterResult("UsageBuffer put -> close", written, total, achieved, note))
    say(f"  {written:,} records in {total:.1f} s: {achieved:,.0f} records/s ({note})")
    in_ledger = rows_above(top)
    results.check(
        "UsageBuffer wrote every event once, none spooled",
        in_ledger == sent == written and spooled == 0,
        f"{in_ledger:,} rows, {sent:,} put, {written:,} written",
    )


# --- pages -----------------------------------------------------------------------------------


def time_page(
    page: spend_pages.Page,
    get: Callable[[str], tuple[int, str]],
    via: str,
    repeat: int,
    results: Results,
) -> None:
    started = time.perf_counter()
    status, body = get(page.path)
    first = time.perf_counter() - started
    result = PageResult(page.name, page.path, via, first, size=len(body))
    problem = page.check(body) if status == 200 else f"HTTP {status}"
    results.check(f"{via}: {page.name} is right", not problem, problem)
    for _ in range(repeat):
        started = time.perf_counter()
        get(page.path)
        result.runs.append(time.perf_counter() - started)
    results.pages.append(result)
    say(
        f"  {via}: {page.name}: p50 {result.p50:.3f} s, max {result.worst:.3f} s "
        f"(first {first:.3f} s, {len(body):,} bytes)"
    )


def time_pages(
    pages: list[spend_pages.Page],
    get: Callable[[str], tuple[int, str]],
    via: str,
    repeat: int,
    results: Results,
) -> None:
    for page in pages:
        timed = functools.partial(time_page, page, get, via, repeat, results)
        guarded(results, f"{via}: {page.name}", timed)


# --- report ----------------------------------------------------------------------------------


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def report(results: Results) -> str:
    lines = ["| step | time | rows | rows/s | |", "|---|---|---|---|---|"]
    for s in results.steps:
        rows = f"{s.rows:,}" if s.rows else ""
        rate = f"{s.rows_per_second:,.0f}" if s.rows else ""
        lines.append(f"| {s.name} | {s.seconds:,.1f} s | {rows} | {rate} | {s.note} |")
    lines += ["", f"| ledger writer | records/s | target ≥ {WRITER_TARGET:,}/s | |"]
    lines.append("|---|---|---|---|")
    for w in results.writers:
        lines.append(f"| {w.name} | **{w.rate:,.0f}** | {_verdict(w.met)} | {w.note} |")
    lines += ["", f"| page | via | p50 | max | first | target < {PAGE_TARGET:.0f} s |"]
    lines.append("|---|---|---|---|---|---|")
    for p in results.pages:
        lines.append(
            f"| {p.name} | {p.via} | **{p.p50:.3f} s** | {p.worst:.3f} s | {p.first:.3f} s "
            f"| {_verdict(p.met)} |"
        )
    failed = [c for c in results.checks if not c.ok]
    lines += ["", f"checks: {len(results.checks) - len(failed)} of {len(results.checks)} OK"]
    lines += [f"FAILED: {c.name}: {c.detail}" for c in failed]
    return "\n".join(lines)


def as_json(results: Results) -> dict[str, Any]:
    data = asdict(results)
    for page, timed in zip(data["pages"], results.pages, strict=True):
        page.update(p50=timed.p50, max=timed.worst, target_met=timed.met)
    for writer, measured in zip(data["writers"], results.writers, strict=True):
        writer["target_met"] = measured.met
    return data


# --- main ------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, help=f"ledger rows (default {DEFAULT_ROWS:,})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_ROWS:,} rows, short writer runs, 2 repetitions",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="keep a ledger that already holds --rows rows or more"
    )
    parser.add_argument("--sessions", type=int, help="Claude Code sessions (default ~rows/500)")
    parser.add_argument("--writer-seconds", type=float, help="write_events run (default 20)")
    parser.add_argument("--batch", type=int, default=500, help="events per write_events call")
    parser.add_argument("--buffer-seconds", type=float, help="UsageBuffer run (default 10)")
    parser.add_argument(
        "--offered-rate", type=float, default=10_000, help="events/s put into the UsageBuffer"
    )
    parser.add_argument("--repeat", type=int, help="timed requests per page (default 5)")
    parser.add_argument("--skip-rollup", action="store_true", help="do not run the rollups")
    parser.add_argument(
        "--redo-rollup",
        action="store_true",
        help="with --reuse: empty the rollups, roll everything up again",
    )
    parser.add_argument("--skip-periods", action="store_true", help="do not sync budget periods")
    parser.add_argument("--skip-writer", action="store_true", help="do not measure the writer")
    parser.add_argument("--no-http", action="store_true", help="test client only, no uvicorn")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, SQLite)")
    args = parser.parse_args()
    quick = args.quick
    args.rows = args.rows or (QUICK_ROWS if quick else DEFAULT_ROWS)
    args.sessions = args.sessions or max(50, min(20_000, args.rows // 500))
    args.writer_seconds = args.writer_seconds or (4.0 if quick else 20.0)
    args.buffer_seconds = args.buffer_seconds or (3.0 if quick else 10.0)
    args.repeat = args.repeat or (2 if quick else 5)
    if args.rows < 10_000:
        parser.error("--rows must be at least 10,000 (the deep /logs pages need them)")
    return args


def guarded(results: Results, name: str, step: Callable[[], None]) -> None:
    """Run a step; an exception is reported as a failed check and the run goes on."""
    try:
        step()
    except Exception as error:
        traceback.print_exc()
        results.check(f"{name} ran", False, f"{type(error).__name__}: {error}")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `finally`s


def run(args: argparse.Namespace, env: dict[str, str], workdir: Path, results: Results) -> None:
    import django

    django.setup()
    import spend_ledger
    import spend_pages
    import spend_seed

    started = time.perf_counter()
    tree = spend_seed.seed_tree()
    results.steps.append(
        Step(
            "seed the organization tree",
            time.perf_counter() - started,
            note=f"{len(tree.keys)} keys, {tree.budgets} budgets",
        )
    )
    say(
        f"organization tree: {len(tree.organizations)} organizations, "
        f"{sum(len(t) for t in tree.teams.values())} teams, {len(tree.keys)} keys, "
        f"{tree.budgets} budgets"
    )
    plan = spend_ledger.build_plan(tree, args.rows, dt.datetime.now(dt.UTC), args.sessions)
    existing = ledger_rows()
    if args.reuse and existing >= args.rows:
        say(f"reusing the ledger's {existing:,} rows (--reuse)")
        if args.redo_rollup:
            say("emptying the rollups (--redo-rollup)")
            empty_tables(derived_models("rollups"))
    else:
        generate(plan, existing, results)
    check_ledger(plan, results)
    if not args.skip_rollup:
        guarded(results, "rollup", lambda: roll_up(results, "rollup of the ledger"))
    if not args.skip_periods:
        guarded(results, "period sync", lambda: sync_periods(tree, results, "sync_budget_periods"))
    if not args.skip_writer:
        factory = spend_ledger.EventFactory(plan)
        guarded(
            results,
            "write_events",
            lambda: measure_write_events(factory, args.writer_seconds, args.batch, results),
        )
        guarded(
            results,
            "UsageBuffer",
            lambda: measure_usage_buffer(
                factory, args.offered_rate, args.buffer_seconds, workdir, results
            ),
        )
        # What the every-minute rollup and 5-minute period jobs would have done meanwhile.
        if not args.skip_rollup:
            guarded(results, "rollup", lambda: roll_up(results, "rollup of the writer's rows"))
        if not args.skip_periods:
            guarded(
                results,
                "period sync",
                lambda: sync_periods(tree, results, "sync_budget_periods again"),
            )
    say("timing pages (the figures each must show come straight from the ledger)")
    pages = spend_pages.pages_to_time(tree)
    client = spend_pages.logged_in_client(tree)
    getter = spend_pages.client_getter(client)
    guarded(
        results, "page timing", lambda: time_pages(pages, getter, "client", args.repeat, results)
    )
    if not args.no_http:
        cookie = client.cookies["sessionid"].value
        chosen = [p for p in pages if not p.name.startswith("CSV")]

        def over_http() -> None:
            with spend_pages.http_server(env, workdir) as port:
                get = spend_pages.http_getter(port, cookie)
                time_pages(chosen, get, "http", args.repeat, results)

        guarded(results, "page timing over HTTP", over_http)


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="gw-spend-bench-"))
    try:
        url = database_url(args, workdir)
        env = bench_env(url, workdir)
        os.environ.update(env)
        sys.path.insert(0, str(ROOT))
        results = Results(machine(), {k: str(v) for k, v in vars(args).items()})
        results.machine["database"] = url.split("://", 1)[0]
        say(
            f"machine: {results.machine['cpu']}, {results.machine['cores']} cores, "
            f"Python {results.machine['python']}, load {results.machine['loadavg_start'][0]:.2f}; "
            f"database {results.machine['database']}; {args.rows:,} rows"
        )
        if url.startswith("postgres"):
            ensure_postgresql_database(url)
        migrate(env)
        try:
            run(args, env, workdir, results)
        finally:
            results.machine["loadavg_end"] = os.getloadavg()
            print()
            print(report(results))
            if args.json:
                args.json.write_text(json.dumps(as_json(results), indent=2, default=str))
        return 0 if all(c.ok for c in results.checks) else 1
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
