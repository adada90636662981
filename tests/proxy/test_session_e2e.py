"""A Claude Code session signed in through the gateway: its routes, tokens and budget signals
(issue 12 items 1, 2 and 4, the proxy's side)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import httpx
import pytest
from django.conf import settings

from governance import signin_tokens
from governance.keyhash import hash_secret
from governance.policy import KeyPolicy
from governance.services import keys
from telemetry.models import UsageRecord
from tests import factories
from tests.proxy.conftest import ACTOR, GatewayServer, Governed, ledger_rows, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 10,
    "messages": [{"role": "user", "content": "hi"}],
}
USD = 1_000_000
# One request through the fake upstream: 25 in at $3, 12 out at $15 per MTok.
COST = (25 * 3_000_000 + 12 * 15_000_000 + 500_000) // 1_000_000


def access_token(secret: str, *, now: dt.datetime | None = None) -> str:
    key = signin_tokens.signing_key(settings.GATEWAY_SIGNIN_KEY, settings.SECRET_KEY)
    return signin_tokens.mint(
        key_lookup_hash=hash_secret(secret),
        subject="idp|alice",
        email="alice@acme.dev",
        groups=("backend",),
        key=key,
        now=now or dt.datetime.now(dt.UTC),
    )


@pytest.fixture
def developer(governed: Governed):
    """Alice's per-developer sub-key of the team key, as sign-in provisions it."""
    return factories.issued_key(parent=governed.key, name="alice@acme.dev")


def an_hour_ago() -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)


def session_post(gateway: GatewayServer, token: str, path: str = "/v1/messages", body=BODY):
    return httpx.post(
        gateway.base_url + settings.GATEWAY_SIGNIN_PATH + path,
        json=body,
        headers={"authorization": f"Bearer {token}"} if token else {},
        params={"beta": "true"},
        timeout=10,
    )


def unified(response: httpx.Response) -> dict[str, str]:
    prefix = "anthropic-ratelimit-unified-"
    return {k[len(prefix) :]: v for k, v in response.headers.items() if k.startswith(prefix)}


def test_a_signed_in_session_is_governed_as_the_developers_key(gateway, governed, developer):
    response = session_post(gateway, access_token(developer.secret))

    assert response.status_code == 200
    [row] = ledger_rows(1)
    assert (row.route, row.key_id, row.parent_key_id, row.team_id) == (
        "claude_code.messages",
        developer.key.pk,
        governed.key.pk,
        governed.team.pk,
    )


def test_successful_answers_carry_the_fullest_budgets_utilisation(gateway, governed, developer):
    factories.budget(owner=developer.key, amount_micros=COST * 10, period="month")
    token = access_token(developer.secret)

    first = session_post(gateway, token)
    ledger_rows(1)
    for _ in range(7):  # 8 of 10 requests' worth spent: past 75 %
        assert session_post(gateway, token).status_code == 200
    ninth = session_post(gateway, token)

    assert unified(first)["status"] == "allowed"
    assert unified(first)["overage-utilization"] == "0"
    assert unified(first)["representative-claim"] == "overage"
    signals = unified(ninth)
    assert signals["status"] == signals["overage-status"] == "allowed_warning"
    assert signals["overage-utilization"] == "0.8"
    assert signals["overage-surpassed-threshold"] == "0.75"
    assert int(signals["reset"]) > dt.datetime.now(dt.UTC).timestamp()


def test_an_exhausted_budget_tells_claude_code_not_to_retry_until_the_reset(
    gateway, governed, developer
):
    factories.budget(owner=governed.team, amount_micros=1, period="day")

    response = session_post(gateway, access_token(developer.secret))

    assert response.status_code == 402
    assert response.json()["error"]["type"] == "billing_error"
    assert response.headers["x-should-retry"] == "false"
    assert 1 <= int(response.headers["retry-after"]) <= 86_400
    signals = unified(response)
    assert (signals["status"], signals["overage-period"]) == ("rejected", "daily")
    assert signals["overage-disabled-reason"] == "org_spend_cap_reached"


def test_an_api_key_client_gets_the_retry_signals_on_a_budget_refusal_too(gateway, governed):
    factories.budget(owner=governed.team, amount_micros=1, period="week")

    response = httpx.post(
        gateway.anthropic_url + "/v1/messages",
        json=BODY,
        headers={"x-api-key": governed.secret},
        timeout=10,
    )

    assert response.status_code == 402
    assert response.headers["x-should-retry"] == "false"
    assert 1 <= int(response.headers["retry-after"]) <= 7 * 86_400


@pytest.mark.parametrize("case", ["expired", "forged", "missing"])
def test_a_bad_session_token_sends_claude_code_back_to_login(gateway, developer, case):
    token = {
        "expired": access_token(
            developer.secret, now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        ),
        "forged": signin_tokens.mint(
            key_lookup_hash=hash_secret(developer.secret),
            subject="x",
            email="",
            groups=(),
            key=b"not the gateway's key, long enough for HS256",
            now=dt.datetime.now(dt.UTC),
        ),
        "missing": "",
    }[case]

    response = session_post(gateway, token)

    assert response.status_code == 401
    assert response.headers["x-should-retry"] == "false"
    assert "/login" in response.json()["error"]["message"]


def test_a_deprovisioned_developers_token_stops_working_at_once(gateway, developer):
    token = access_token(developer.secret)
    assert session_post(gateway, token).status_code == 200
    keys.revoke_key(actor=ACTOR, key=developer.key, reason="left the company")

    response = session_post(gateway, token)

    assert response.status_code == 401
    assert response.headers["x-should-retry"] == "false"
    wait_for(lambda: UsageRecord.objects.filter(status=401).exists())


def test_a_virtual_key_is_not_a_session_token(gateway, governed):
    assert session_post(gateway, governed.secret).status_code == 401


def test_count_tokens_and_models_answer_a_signed_in_session(gateway, developer):
    token = access_token(developer.secret)

    counted = session_post(gateway, token, "/v1/messages/count_tokens", body={**BODY})
    models = httpx.get(
        gateway.base_url + settings.GATEWAY_SIGNIN_PATH + "/v1/models",
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )

    assert counted.status_code == 200 and counted.json()["input_tokens"] == 25
    assert models.status_code == 200


def test_available_models_are_matched_by_any_name_of_a_model():
    policy = KeyPolicy(
        key_id=1,
        key_name="k",
        prefix="p",
        organization_id=1,
        organization_name="acme",
        timezone="UTC",
        fail_open=False,
        available_models=("claude-sonnet-4-6", "claude-haiku-*"),
    )

    assert policy.available("claude-sonnet-4-6")
    assert policy.available("claude-sonnet-4-6[1m]")  # Claude Code's 1M-context hint
    assert policy.available("claude-haiku-4-5-20251001")
    assert not policy.available("claude-opus-4-6")
    assert dataclasses.replace(policy, available_models=()).available("anything")
