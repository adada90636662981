"""Dependencies failing: the counter store (Redis) and the database behind the ledger."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db.utils import OperationalError

from governance.models import Organization
from governance.services import common
from telemetry import ledger
from telemetry.models import UsageRecord
from tests import factories
from tests.proxy.conftest import ACTOR, GatewayServer, ledger_rows, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 10,
    "messages": [{"role": "user", "content": "hi"}],
}


@pytest.fixture
def redis_down(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there


def post(gateway: GatewayServer, secret: str) -> httpx.Response:
    return httpx.post(
        gateway.anthropic_url + "/v1/messages", json=BODY, headers={"x-api-key": secret}, timeout=10
    )


def test_redis_down_fails_closed_by_default(redis_down, gateway, governed):
    factories.budget(owner=governed.team, amount_micros=10_000_000)
    response = post(gateway, governed.secret)
    assert response.status_code == 503
    assert "fail closed" in response.json()["error"]["message"]


def test_redis_down_fails_open_when_the_organization_says_so(redis_down, gateway, governed):
    factories.budget(owner=governed.team, amount_micros=10_000_000)
    governed.organization.admission_fail_mode = Organization.AdmissionFailMode.OPEN
    common.save_instance(governed.organization, actor=ACTOR)
    assert post(gateway, governed.secret).status_code == 200
    [row] = ledger_rows(1)  # the spend is still in the ledger, for reconciliation
    assert row.cost_micros > 0


@pytest.fixture
def fast_replay(settings):
    settings.GATEWAY_SPOOL_REPLAY_SECONDS = 0.1


def test_database_outage_loses_no_usage(fast_replay, gateway, governed, monkeypatch):
    real_write = ledger.write_events

    def database_down(events):
        raise OperationalError("connection refused")

    monkeypatch.setattr(ledger, "write_events", database_down)
    statuses = [post(gateway, governed.secret).status_code for _ in range(5)]
    assert statuses == [200] * 5  # serving continues while the ledger is down
    spool = gateway_spool(gateway)
    wait_for(lambda: any(spool.glob("usage-*.jsonl")))
    assert UsageRecord.objects.count() == 0
    monkeypatch.setattr(ledger, "write_events", real_write)
    post(gateway, governed.secret)  # any later activity triggers the replay
    rows = ledger_rows(6, timeout=10)
    assert len({row.request_id for row in rows}) == 6 == UsageRecord.objects.count()
    wait_for(lambda: not any(spool.glob("usage-*")))


def gateway_spool(gateway: GatewayServer) -> Path:
    return Path(settings.GATEWAY_SPOOL_DIR)
