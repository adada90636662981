"""A client written against Anthropic's Admin API works against the gateway unchanged: the
official `anthropic` SDK's spend-limit calls, and plain HTTP with `x-api-key` for the usage and
cost reports (the SDK has no calls for those legacy routes), against a live gateway."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types.beta.organization import BetaSpendLimit, BetaSpendSummary
from django.utils import timezone

from governance.models import Budget, Role
from tests.proxy.conftest import GatewayServer, start_gateway
from tests.telemetry.api_support import token_for, world
from tests.telemetry.usage_events import event, write

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def gateway(settings: Any, tmp_path: Any) -> Iterator[GatewayServer]:
    settings.GATEWAY_SPOOL_DIR = str(tmp_path / "spool")
    server = start_gateway()
    yield server
    server.stop()


def test_the_sdk_sets_reads_lists_and_deletes_spend_limits(gateway):
    w = world()
    client = anthropic.Anthropic(
        base_url=gateway.base_url, api_key=token_for(Role.FINANCE, w.acme), max_retries=0
    )
    limits = client.beta.organization.spend_limits

    team = limits.set(
        scope={"type": "rbac_group", "rbac_group_id": "backend"},  # type: ignore[arg-type]
        amount="50000",
        period="monthly",
    )
    org = limits.set(scope={"type": "organization"}, amount="200000", period="monthly")
    key = limits.set(scope={"type": "user", "user_id": "vk-ml"}, amount=None, period="daily")

    assert isinstance(team, BetaSpendLimit) and team.amount == "50000"
    assert team.scope.type == "rbac_group" and team.period == "monthly"
    assert key.amount is None and key.period == "daily"
    assert limits.retrieve(org.id).amount == "200000"
    # limit=1 pages through next_page; the SDK follows it by itself.
    assert [row.id for row in limits.list(limit=1)] == [team.id, org.id, key.id]
    assert Budget.objects.get(pk=int(team.id[4:])).team == w.backend

    deleted = limits.delete(key.id)
    assert (deleted.id, deleted.type) == (key.id, "spend_limit_deleted")
    with pytest.raises(anthropic.NotFoundError) as missing:
        limits.retrieve(key.id)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError):
        limits.set(scope={"type": "organization"}, amount="1", period="hourly")  # type: ignore[arg-type]


def test_the_sdk_reads_effective_limits(gateway):
    w = world()
    client = anthropic.Anthropic(
        base_url=gateway.base_url, api_key=token_for(Role.PLATFORM_ADMIN, w.acme), max_retries=0
    )
    client.beta.organization.spend_limits.set(
        scope={"type": "organization"}, amount="20", period="monthly"
    )
    write(event(timezone.now() - dt.timedelta(seconds=5), key=w.ml_key, cost=217_000))

    rows = list(
        client.beta.organization.spend_limits.effective.list(user_ids=["vk-ml"], period=["monthly"])
    )

    assert len(rows) == 1 and isinstance(rows[0], BetaSpendSummary)
    assert (rows[0].amount, rows[0].period_to_date_spend) == ("20", "21.7")
    assert rows[0].source.type == "organization"


def test_a_bad_admin_key_is_an_authentication_error(gateway):
    world()
    client = anthropic.Anthropic(base_url=gateway.base_url, api_key="gwapi-wrong", max_retries=0)

    with pytest.raises(anthropic.AuthenticationError) as refused:
        client.beta.organization.spend_limits.retrieve("spl_1")

    assert refused.value.body["error"]["message"] == "missing or invalid admin credentials"  # type: ignore[index]


def test_usage_and_cost_reports_over_plain_http_with_x_api_key(gateway):
    w = world()
    token = token_for(Role.FINANCE, w.acme)
    now = timezone.now()
    write(event(now - dt.timedelta(minutes=1), key=w.backend_key, cost=1_230_000))
    start = (now - dt.timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    headers = {"x-api-key": token, "anthropic-version": "2023-06-01"}

    with httpx.Client(base_url=gateway.base_url, headers=headers, timeout=10) as http:
        usage = http.get(
            "/v1/organizations/usage_report/messages",
            params={"starting_at": start, "group_by[]": ["api_key_id", "model"]},
        )
        cost = http.get("/v1/organizations/cost_report", params={"starting_at": start})

    assert usage.status_code == 200 and usage.headers["request-id"].startswith("req_")
    results = [r for bucket in usage.json()["data"] for r in bucket["results"]]
    assert [(r["api_key_id"], r["model"]) for r in results] == [("vk-backend", "claude-sonnet-4-6")]
    amounts = [r["amount"] for bucket in cost.json()["data"] for r in bucket["results"]]
    assert amounts == ["123"]
