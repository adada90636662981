"""Budgets hold under concurrency: one gateway process, and several sharing one Redis.

Bound (proxy/admission.py): a budget ends above its limit only by what in-flight requests cost
beyond their reservation. Here each reservation covers the whole cost of a request, so the
bound is zero: the ledger must never exceed the limit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx
import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.db.models import Sum

from telemetry.models import UsageRecord
from tests import factories
from tests.fakes.anthropic_upstream import Reply
from tests.proxy.conftest import free_port, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

REQUEST_COST = 25 * 3 + 12 * 15  # fake upstream default usage on claude-sonnet-4-6
BUDGET = 10 * REQUEST_COST + 100
BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 12,
    "messages": [{"role": "user", "content": "hi"}],
}


def fire(urls: list[str], secret: str, count: int) -> list[int]:
    def one(index: int) -> int:
        response = httpx.post(
            urls[index % len(urls)] + "/anthropic/v1/messages",
            json=BODY,
            headers={"x-api-key": secret},
            timeout=30,
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def ledger_spend() -> int:
    return int(UsageRecord.objects.filter(status=200).aggregate(s=Sum("cost_micros"))["s"] or 0)


def assert_budget_held(statuses: list[int], expected_rows: int) -> None:
    assert set(statuses) <= {200, 402}, statuses
    admitted = statuses.count(200)
    assert 1 <= admitted <= BUDGET // REQUEST_COST
    assert statuses.count(402) >= 1
    wait_for(lambda: UsageRecord.objects.count() >= expected_rows, timeout=10)
    assert ledger_spend() == admitted * REQUEST_COST <= BUDGET


def test_concurrent_requests_never_spend_past_the_budget(gateway, governed, fake_upstream):
    fake_upstream.default = Reply(chunk_delay=0.0)
    factories.budget(owner=governed.team, amount_micros=BUDGET)
    statuses = fire([gateway.base_url], governed.secret, 40)
    assert_budget_held(statuses, 40)


@pytest.mark.skipif(
    not os.environ.get("REDIS_URL") or "postgres" not in os.environ.get("DATABASE_URL", ""),
    reason="several gateway processes need a shared Redis and PostgreSQL",
)
def test_several_gateway_processes_sharing_redis_hold_one_budget(governed, fake_upstream, tmp_path):
    factories.budget(owner=governed.organization, amount_micros=BUDGET)
    db = django_settings.DATABASES["default"]
    database_url = (
        f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}"
    )
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GATEWAY_POLICY_CHECK_SECONDS": "0",
        "DJANGO_SETTINGS_MODULE": "gatewaysite.settings_test",
        "GATEWAY_SPOOL_DIR": str(tmp_path / "spool"),
    }
    connection.close()
    ports = [free_port() for _ in range(3)]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "gatewaysite.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=env,
            cwd=Path(__file__).resolve().parents[2],
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url in urls:
            wait_for(partial(_healthy, url), timeout=60)
        statuses = fire(urls, governed.secret, 60)
    finally:
        for process in processes:
            process.terminate()  # graceful: lifespan shutdown flushes pending usage
        for process in processes:
            process.wait(20)
    assert_budget_held(statuses, 60)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.1)
        return False
