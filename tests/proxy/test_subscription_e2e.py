"""Claude subscription mode through a real gateway, in front of a fake Anthropic that accepts
only the developer's OAuth token with the OAuth beta (issue 9 item 6)."""

from __future__ import annotations

import logging

import httpx
import pytest

from governance.models import Deployment, ModelRoute, Provider
from governance.services import common
from telemetry.models import UsageRecord
from tests import factories
from tests.proxy.conftest import ACTOR, UPSTREAM_KEY, GatewayServer, Governed, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

OAUTH_TOKEN = "sk-ant-oat01-test-subscription-token-0123456789"
BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 10,
    "messages": [{"role": "user", "content": "hi"}],
}


def post(gateway: GatewayServer, headers: dict[str, str], body: object = BODY) -> httpx.Response:
    return httpx.post(
        gateway.anthropic_url + "/v1/messages", json=body, headers=headers, timeout=10
    )


def signed_in(governed: Governed) -> dict[str, str]:
    """What Claude Code sends when signed in with a subscription and
    ANTHROPIC_CUSTOM_HEADERS="x-gateway-key: <virtual key>"."""
    return {
        "authorization": f"Bearer {OAUTH_TOKEN}",
        "anthropic-beta": "claude-code-20250219,oauth-2025-04-20",
        "x-gateway-key": governed.secret,
    }


def row_of(response: httpx.Response) -> UsageRecord:
    request_id = response.headers["x-gateway-request-id"]
    wait_for(lambda: UsageRecord.objects.filter(request_id=request_id).exists())
    return UsageRecord.objects.get(request_id=request_id)


def allow(governed: Governed, mode: str) -> None:
    governed.organization.subscription_traffic = mode
    common.save_instance(governed.organization, actor=ACTOR)


@pytest.fixture
def subscription_upstream(fake_upstream):
    fake_upstream.require_oauth = OAUTH_TOKEN
    return fake_upstream


def test_subscription_traffic_is_refused_unless_the_organization_allows_it(
    gateway, governed, subscription_upstream
):
    response = post(gateway, signed_in(governed))

    assert response.status_code == 403
    assert "subscription" in response.json()["error"]["message"]
    assert subscription_upstream.received == []
    row = row_of(response)
    assert (row.status, row.billing) == (403, "subscription")


def test_showback_forwards_the_token_untouched_and_records_list_price_outside_budgets(
    gateway, governed, subscription_upstream
):
    allow(governed, "showback")
    factories.budget(owner=governed.team, amount_micros=1, period="day")  # would refuse API use

    response = post(gateway, signed_in(governed))

    assert response.status_code == 200
    sent = subscription_upstream.received[0].headers
    assert sent["Authorization"] == f"Bearer {OAUTH_TOKEN}"
    assert "oauth-2025-04-20" in sent["anthropic-beta"]
    assert "x-api-key" not in {name.lower() for name in sent}  # the gateway's key stays home
    assert "x-gateway-key" not in {name.lower() for name in sent}
    row = row_of(response)
    assert (row.billing, row.cost_micros, row.key_id) == ("subscription", 0, governed.key.pk)
    # Sonnet 4.6 list price: 25 in at $3, 12 out at $15 per MTok.
    assert row.list_cost_micros == (25 * 3_000_000 + 12 * 15_000_000 + 500_000) // 1_000_000


def test_budgeted_subscription_spend_counts_against_budgets(
    gateway, governed, subscription_upstream
):
    allow(governed, "budgeted")
    factories.budget(owner=governed.team, amount_micros=300, period="day")

    first = post(gateway, signed_in(governed))
    assert first.status_code == 200
    row_of(first)
    second = post(gateway, signed_in(governed))

    assert row_of(first).cost_micros == row_of(first).list_cost_micros > 0
    assert second.status_code == 402


def test_a_subscription_token_goes_only_to_anthropic(gateway, governed, subscription_upstream):
    allow(governed, "showback")
    mock = Provider(name="builtin", kind=Provider.Kind.MOCK)
    common.save_instance(mock, actor=ACTOR)
    route = ModelRoute(public_name="claude-haiku-4-5")
    common.save_instance(route, actor=ACTOR)
    common.save_instance(Deployment(route=route, provider=mock), actor=ACTOR)

    response = post(gateway, signed_in(governed), {**BODY, "model": "claude-haiku-4-5"})

    assert response.status_code == 403
    assert "Anthropic" in response.json()["error"]["message"]


def test_a_subscription_token_without_a_virtual_key_is_told_how_to_name_one(
    gateway, governed, subscription_upstream
):
    headers = {k: v for k, v in signed_in(governed).items() if k != "x-gateway-key"}

    response = post(gateway, headers)

    assert response.status_code == 401
    assert "x-gateway-key" in response.json()["error"]["message"]


def test_an_expired_subscription_token_is_the_developers_401(
    gateway, governed, subscription_upstream
):
    allow(governed, "showback")
    subscription_upstream.require_oauth = "sk-ant-oat01-some-other-token"

    response = post(gateway, signed_in(governed))

    assert response.status_code == 401  # Claude Code signs in again, instead of a 502
    assert row_of(response).status == 401


def test_the_subscription_token_is_never_logged_or_stored(
    gateway, governed, subscription_upstream, caplog
):
    allow(governed, "showback")
    caplog.set_level(logging.DEBUG)
    subscription_upstream.require_oauth = "sk-ant-oat01-some-other-token"

    post(gateway, signed_in(governed))
    response = post(gateway, signed_in(governed))

    assert OAUTH_TOKEN not in caplog.text
    assert OAUTH_TOKEN not in response.text
    row = row_of(response)
    assert all(OAUTH_TOKEN not in str(getattr(row, f.attname)) for f in row._meta.fields)


def test_api_key_traffic_of_the_same_key_is_unchanged(gateway, governed, fake_upstream):
    allow(governed, "showback")

    response = post(gateway, {"x-api-key": governed.secret})

    assert response.status_code == 200
    assert fake_upstream.received[0].headers["x-api-key"] == UPSTREAM_KEY
    assert row_of(response).billing == ""
