"""The pages the spend benchmark times, each with what it must show (from the ledger).

Used by benchmarks/spend_pipeline.py after django.setup(). Every check compares the page with
figures computed straight from the ledger, not through the code under test: the month's spend
and request count on the dashboard and in the CSV, the request ids /logs lists, in order.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import http.client
import io
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, Q, Sum
from django.test import Client
from spend_seed import Tree

from governance.money import format_usd
from telemetry.dashboards.logfilters import Cursor
from telemetry.dashboards.spans import parse_span
from telemetry.models import UsageRecord

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
LOG_LINK = re.compile(r'href="/logs/(gwreq_[0-9a-f]+)"')
Getter = Callable[[str], tuple[int, str]]  # path -> (HTTP status, body)


@dataclass(frozen=True)
class Page:
    name: str
    path: str
    check: Callable[[str], str]  # body -> "" when right, else what is wrong


def _ledger_totals(org_id: int, start: dt.datetime) -> tuple[int, int]:
    found = UsageRecord.objects.filter(organization_id=org_id, created_at__gte=start).aggregate(
        n=Count("id"), cost=Sum("cost_micros")
    )
    return int(found["n"]), int(found["cost"] or 0)


def spend_page(name: str, org_id: int, tz: str, preset: str) -> Page:
    span = parse_span({"range": preset}, tz, dt.datetime.now(dt.UTC))
    requests, cost = _ledger_totals(org_id, span.start)
    shown = (format_usd(cost), f"{requests:,}")

    def check(body: str) -> str:
        missing = [text for text in shown if text not in body]
        return f"the page does not show {' and '.join(missing)}" if missing else ""

    return Page(name, f"/dashboards/spend?org={org_id}&range={preset}", check)


def csv_page(name: str, org_id: int, tz: str, export: str) -> Page:
    span = parse_span({"range": "month"}, tz, dt.datetime.now(dt.UTC))
    requests, cost = _ledger_totals(org_id, span.start)

    def check(body: str) -> str:
        rows = list(csv.DictReader(io.StringIO(body)))
        if not rows:
            return "no rows"
        if export in ("team", "model", "project"):
            got = sum(int(Decimal(r["cost_usd"]) * 1_000_000) for r in rows)
            count = sum(int(r["requests"]) for r in rows)
            if (got, count) != (cost, requests):
                return (
                    f"sums to {got:,} µ$ / {count:,} requests, the ledger {cost:,} / {requests:,}"
                )
        return ""

    path = f"/dashboards/spend?org={org_id}&range=month&format=csv&export={export}"
    return Page(name, path, check)


def logs_page(name: str, query: str, expected: list[str]) -> Page:
    """`expected`: the request ids the page must list, newest first."""

    def check(body: str) -> str:
        listed = LOG_LINK.findall(body)
        if listed != expected:
            return (
                f"lists {len(listed)} rows starting {listed[:1]}, the ledger has "
                f"{len(expected)} starting {expected[:1]}"
            )
        return ""

    return Page(name, f"/logs?{query}", check)


def _newest(rows: Any, limit: int = 50) -> list[str]:
    return list(rows.order_by("-created_at", "-id").values_list("request_id", flat=True)[:limit])


def deep_page(rows: Any, page: int = 50, size: int = 50) -> tuple[str, list[str], int]:
    """(the `before` cursor of page `page`, its request ids, its number), or of the deepest
    full page when there are fewer rows."""
    head = list(
        rows.order_by("-created_at", "-id").values_list("created_at", "id", "request_id")[
            : page * size
        ]
    )
    page = min(page, len(head) // size)
    if page < 2:
        raise RuntimeError("too few ledger rows for a deep /logs page")
    created_at, pk, _ = head[(page - 1) * size - 1]  # the last row of the page before
    ids = [request_id for _, _, request_id in head[(page - 1) * size : page * size]]
    return Cursor(created_at, pk).token(), ids, page


def pages_to_time(tree: Tree) -> list[Page]:
    """The pages, with what each must show computed straight from the ledger."""
    now = dt.datetime.now(dt.UTC)
    utc_org, ny_org = tree.organizations["bench-acme"], tree.organizations["bench-globex"]
    yesterday = (now - dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    day = UsageRecord.objects.filter(
        created_at__gte=yesterday, created_at__lt=yesterday + dt.timedelta(days=1)
    )
    team = (
        day.filter(organization_id=utc_org, team_id__isnull=False)
        .values("team_id")
        .annotate(n=Count("id"))
        .order_by("-n")[0]["team_id"]
    )
    model, status = "claude-opus-4-8", 429
    filtered = day.filter(team_id=team, status=status).filter(
        Q(served_model=model) | Q(routed_model=model) | Q(requested_model=model)
    )
    session = (
        day.exclude(session_id="")
        .values("session_id")
        .annotate(n=Count("id"))
        .order_by("-n")[0]["session_id"]
    )
    last_24h = UsageRecord.objects.filter(created_at__gte=now - dt.timedelta(hours=24))
    deep, deep_ids, deep_n = deep_page(last_24h)
    team_30d = UsageRecord.objects.filter(team_id=team, created_at__gte=now - dt.timedelta(days=30))
    team_deep, team_deep_ids, team_deep_n = deep_page(team_30d)
    one_day = (
        f"start={yesterday:%Y-%m-%dT%H:%M}&end={yesterday + dt.timedelta(days=1):%Y-%m-%dT%H:%M}"
    )
    return [
        spend_page("spend, this month, UTC org", utc_org, "UTC", "month"),
        spend_page("spend, this month, America/New_York org", ny_org, "America/New_York", "month"),
        spend_page("spend, last 30 days, UTC org", utc_org, "UTC", "30d"),
        logs_page("/logs, no filter (last 24 h)", "", _newest(last_24h)),
        logs_page(
            f"/logs, team + model + status {status} + one day",
            f"team={team}&model={model}&status={status}&{one_day}",
            _newest(filtered),
        ),
        logs_page(
            "/logs, one session (all time)",
            f"session={session}&range=all",
            _newest(UsageRecord.objects.filter(session_id=session)),
        ),
        logs_page(f"/logs, page {deep_n}, no filter (last 24 h)", f"before={deep}", deep_ids),
        logs_page(
            f"/logs, page {team_deep_n}, one team (last 30 days)",
            f"team={team}&range=30d&before={team_deep}",
            team_deep_ids,
        ),
        csv_page("CSV: spend by team, this month", utc_org, "UTC", "team"),
        csv_page("CSV: top keys, this month", utc_org, "UTC", "keys"),
        csv_page("CSV: top sessions, this month", utc_org, "UTC", "sessions"),
    ]


def logged_in_client(tree: Tree) -> Client:
    client = Client(HTTP_HOST=HOST)
    client.force_login(get_user_model().objects.get(username=tree.admin_username))
    return client


def client_getter(client: Client) -> Getter:
    def get(path: str) -> tuple[int, str]:
        response = client.get(path)
        return response.status_code, response.content.decode()

    return get


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def http_server(env: dict[str, str], workdir: Path) -> Iterator[int]:
    """The gateway under uvicorn (one worker, lifespan off: Django pages only)."""
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "gatewaysite.asgi:application", "--host", HOST,
        "--port", str(port), "--no-access-log", "--log-level", "warning", "--lifespan", "off",
    ]  # fmt: skip
    with (workdir / "uvicorn.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"uvicorn exited with {process.returncode}")
                with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("uvicorn did not start listening in 30 s")
                time.sleep(0.1)
            yield port
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def http_getter(port: int, session_cookie: str) -> Callable[[str], tuple[int, str]]:
    connection = http.client.HTTPConnection(HOST, port, timeout=120)

    def get(path: str) -> tuple[int, str]:
        connection.request("GET", path, headers={"Cookie": f"sessionid={session_cookie}"})
        response = connection.getresponse()
        return response.status, response.read().decode()

    return get
