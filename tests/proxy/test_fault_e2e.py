"""Redis and then PostgreSQL fail during steady mixed JSON / SSE load, and nothing is lost.

The gateway runs as a real uvicorn process that reaches PostgreSQL and Redis through relays
(tests/fakes/tcp_proxy.py) the test can cut: to the gateway that is the service going down,
connections reset and new ones refused, while the test itself still reads the ledger and the
counters directly. Two organizations share the load: one fails open when Redis is down, one
fails closed. Afterwards every answer the client got, success or refusal, must have exactly one
ledger row under its request id, the ledger must hold nothing else, and once reconciliation has
run the budget counters must equal the ledger.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest
import redis
from django.conf import settings
from django.db import connection

from governance.models import Budget
from governance.periods import window
from telemetry import ledger, reconcile
from telemetry.models import UsageRecord
from tests import factories
from tests.fakes.anthropic_upstream import Reply
from tests.fakes.tcp_proxy import FaultyRelay
from tests.proxy.conftest import ensure_price_book, free_port, route_claude_to

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.REDIS_URL or "postgresql" not in settings.DATABASES["default"]["ENGINE"],
        reason="the fault test needs PostgreSQL and Redis (make test-pg, CI)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
USD = 1_000_000
# Seconds into the load: Redis goes down, then PostgreSQL; PostgreSQL returns, then Redis.
SCHEDULE = ((1.5, "redis", "stop"), (3.0, "postgres", "stop"), (4.5, "postgres", "start"))
REDIS_BACK_AT = 6.0
LOAD_SECONDS = 7.5
WORKERS = 6


@dataclass
class Answer:
    status: int
    request_id: str
    streamed: bool
    complete: bool


def test_redis_then_postgres_outage_under_load_loses_nothing(tmp_path, fake_upstream):
    ensure_price_book()
    fake_upstream.default = Reply(chunk_delay=0.005, deltas=4)
    route_claude_to(fake_upstream)
    secrets, budgets = {}, []
    for mode in ("open", "closed"):
        org = factories.organization(name=f"org-{mode}", admission_fail_mode=mode)
        team = factories.team(organization=org, name="backend")
        issued = factories.issued_key(team=team, name=f"vk-{mode}")
        secrets[mode] = issued.secret
        budgets += [
            factories.budget(owner=org, amount_micros=1_000 * USD),
            factories.budget(owner=team, amount_micros=500 * USD),
            factories.budget(owner=issued.key, amount_micros=200 * USD, period="day"),
        ]

    with (
        FaultyRelay(*_address(_database_url())) as postgres,
        FaultyRelay(*_address(settings.REDIS_URL)) as redis_relay,
        _gateway(tmp_path, postgres.port, redis_relay.port) as base_url,
    ):
        relays = {"postgres": postgres, "redis": redis_relay}
        answers = asyncio.run(_load(base_url, secrets, relays))

    by_id = {answer.request_id: answer for answer in answers}
    assert len(by_id) == len(answers) > 100  # one id per answer, and a real load
    _assert_outage_happened(answers)
    rows = {row.request_id: row for row in UsageRecord.objects.all()}
    assert set(rows) == set(by_id), "every answer has a row, and the ledger holds nothing else"
    for request_id, answer in by_id.items():
        assert rows[request_id].status == answer.status, request_id
        if answer.status == 200 and answer.streamed:
            assert answer.complete, f"stream {request_id} was cut"

    report = reconcile.reconcile_budgets(pause_seconds=0)
    assert not report.skipped
    _assert_counters_equal_ledger(budgets)


def _assert_outage_happened(answers: list[Answer]) -> None:
    statuses = {answer.status for answer in answers}
    assert 200 in statuses
    # The closed organization was refused while Redis was down: those refusals must be recorded.
    assert 503 in statuses


def _assert_counters_equal_ledger(budgets: list[Budget]) -> None:
    # The period of the last request, not of the clock now: a load that ends just before
    # midnight charged yesterday's day budget.
    last = UsageRecord.objects.latest("created_at").created_at
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        for planned in budgets:
            budget = Budget.objects.select_related("organization").get(pk=planned.pk)
            period = window(budget.period, budget.organization.timezone, last)
            key = reconcile.counter_key(budget.pk, period.label)
            settled, reserved = client.hmget(key, "s", "r")
            spent = ledger.spend_micros(
                scope=budget.scope,
                owner_id=_owner_id(budget),
                start=period.start,
                end=period.end,
            )
            assert spent > 0
            assert (int(settled or 0), int(reserved or 0)) == (spent, 0), budget.scope
    finally:
        client.close()


def _owner_id(budget: Budget) -> int:
    owner = budget.virtual_key or budget.team or budget.project or budget.organization
    assert owner is not None
    return int(owner.pk)


# --- the load ---------------------------------------------------------------------------------


async def _load(
    base_url: str, secrets: dict[str, str], relays: dict[str, FaultyRelay]
) -> list[Answer]:
    answers: list[Answer] = []
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        workers = [
            asyncio.create_task(_worker(client, secrets, number, started, answers))
            for number in range(WORKERS)
        ]
        for at, service, action in SCHEDULE:
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            await asyncio.to_thread(getattr(relays[service], action))
        await asyncio.sleep(max(0.0, started + REDIS_BACK_AT - time.monotonic()))
        await asyncio.to_thread(relays["redis"].start)
        await asyncio.gather(*workers)
    return answers


async def _worker(
    client: httpx.AsyncClient,
    secrets: dict[str, str],
    number: int,
    started: float,
    answers: list[Answer],
) -> None:
    sent = 0
    while time.monotonic() - started < LOAD_SECONDS:
        mode = "open" if (number + sent) % 2 else "closed"
        stream = sent % 3 == 0
        sent += 1
        body = {
            "model": "claude-sonnet-4-6",
            "max_tokens": 64,
            "stream": stream,
            "messages": [{"role": "user", "content": f"request {number}-{sent}"}],
        }
        headers = {"x-api-key": secrets[mode]}
        async with client.stream("POST", "/anthropic/v1/messages", json=body, headers=headers) as r:
            text = (await r.aread()).decode()
        answers.append(
            Answer(
                status=r.status_code,
                request_id=r.headers["x-gateway-request-id"],
                streamed=stream and r.status_code == 200,
                complete="message_stop" in text if stream else True,
            )
        )


# --- the gateway process ------------------------------------------------------------------


def _database_url() -> str:
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host, port = db["HOST"] or "127.0.0.1", db["PORT"] or 5432
    return f"postgres://{credentials}@{host}:{port}/{db['NAME']}"


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or (5432 if "postgres" in url else 6379)


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host).geturl()


class _gateway:  # a context manager named like the function it replaces
    def __init__(self, tmp_path: Path, postgres_port: int, redis_port: int) -> None:
        self.tmp_path = tmp_path
        self.port = free_port()
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "gatewaysite.settings",
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,
            "GATEWAY_ENCRYPTION_KEY": settings.GATEWAY_ENCRYPTION_KEY,
            "DATABASE_URL": _through(_database_url(), postgres_port),
            "REDIS_URL": _through(settings.REDIS_URL, redis_port),
            "GATEWAY_IN_PROCESS_JOBS": "false",
            "GATEWAY_SPOOL_DIR": str(tmp_path / "spool"),
            "GATEWAY_SPOOL_REPLAY_SECONDS": "0.5",
            "GATEWAY_POLICY_CHECK_SECONDS": "0.5",
            "GATEWAY_OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8",
            "LOG_LEVEL": "ERROR",
        }
        self.log = tmp_path / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        command = [
            str(BIN / "uvicorn"),
            "gatewaysite.asgi:application",
            *("--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"),
            *("--timeout-graceful-shutdown", "30"),
        ]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        base_url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(base_url + "/healthz", timeout=1).status_code == 200:
                    return base_url
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError("the gateway did not start:\n" + self.log.read_text())

    def __exit__(self, *exc: object) -> None:
        """SIGTERM: the gateway drains and writes every pending usage event, then exits."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError("the gateway did not exit:\n" + self.log.read_text()) from None
