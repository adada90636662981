"""Regression tests for the hardening of the governed path (issue 10), through a real gateway.

Each test names the defect it guards against: a request id that does not find its ledger row,
an unpriced model served unbilled, an over-long model name poisoning a ledger batch, a failed
read answered with a bare 500, provider budgets charged to the wrong provider, a failing
settlement losing the ledger row, and the abuse paths (body read before the key, forwarded
headers, redirects, count_tokens without limits).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from governance.models import (
    Deployment,
    ModelPolicy,
    ModelPrice,
    ModelRoute,
    Organization,
    Provider,
)
from governance.services import common, keys, providers
from telemetry.models import UsageRecord
from tests import factories
from tests.clock import within_one_window
from tests.fakes.anthropic_upstream import FakeAnthropic, Reply
from tests.proxy.conftest import (
    ACTOR,
    UPSTREAM_KEY,
    GatewayServer,
    Governed,
    ledger_rows,
    wait_for,
)
from tests.proxy.provider_fakes import counter_of

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 10,
    "messages": [{"role": "user", "content": "hi"}],
}


def post(
    gateway: GatewayServer,
    secret: str | None,
    body: object = BODY,
    *,
    path: str = "/v1/messages",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = {"x-api-key": secret} if secret else {}
    sent.update(headers or {})
    if isinstance(body, bytes):
        return httpx.post(gateway.anthropic_url + path, content=body, headers=sent, timeout=10)
    return httpx.post(gateway.anthropic_url + path, json=body, headers=sent, timeout=10)


def row_of(response: httpx.Response) -> UsageRecord:
    """The ledger row of a response, found by the id the response carries (header and body)."""
    request_id = response.headers["x-gateway-request-id"]
    if response.status_code >= 400:
        assert response.json()["request_id"] == request_id
    wait_for(lambda: UsageRecord.objects.filter(request_id=request_id).exists())
    return UsageRecord.objects.get(request_id=request_id)


def set_org(org: Organization, **fields: object) -> None:
    for name, value in fields.items():
        setattr(org, name, value)
    common.save_instance(org, actor=ACTOR)


# --- item 3: refusals carry the id of their ledger row -------------------------------------


def test_every_refusal_carries_the_request_id_of_its_ledger_row(gateway, governed):
    common.save_instance(
        ModelPolicy(team=governed.team, denied_patterns=["claude-opus-*"]), actor=ACTOR
    )
    factories.budget(
        owner=governed.team, amount_micros=1, model_patterns=["claude-haiku-*"], period="day"
    )
    factories.rate_limit(owner=governed.key, requests_per_minute=6)
    within_one_window()
    refusals = {
        401: post(gateway, "sk-gw-unknown-key-0000000000000000000"),
        400: post(gateway, governed.secret, b"{not json"),
        403: post(gateway, governed.secret, {**BODY, "model": "claude-opus-4-6"}),
        404: post(gateway, governed.secret, {**BODY, "model": "gpt-5"}),
        402: post(gateway, governed.secret, {**BODY, "model": "claude-haiku-4-5"}),
    }
    while (last := post(gateway, governed.secret)).status_code != 429:
        assert last.status_code == 200
    refusals[429] = last

    for status, response in refusals.items():
        assert response.status_code == status
        row = row_of(response)
        assert row.status == status
        assert row.error_type == response.json()["error"]["type"]
        assert row.error_message == response.json()["error"]["message"]


def test_a_successful_answer_carries_the_id_of_its_ledger_row(gateway, governed):
    response = post(gateway, governed.secret)

    assert response.status_code == 200
    assert row_of(response).status == 200


# --- item 1: unpriced models --------------------------------------------------------------


def test_unpriced_model_is_refused_before_forwarding_by_default(gateway, governed, fake_upstream):
    response = post(gateway, governed.secret, {**BODY, "model": "claude-nova-1"})

    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"
    assert 'Model "claude-nova-1" has no price' in response.json()["error"]["message"]
    assert fake_upstream.received == []
    assert row_of(response).status == 403


def test_unpriced_model_served_with_fallback_is_recorded_as_estimated(
    gateway, governed, fake_upstream
):
    set_org(governed.organization, unpriced_models="fallback")
    response = post(gateway, governed.secret, {**BODY, "model": "claude-opus-9"})

    assert response.status_code == 200
    row = row_of(response)
    # Priced as the dearest claude-opus price in the book: $15 / $75 per MTok (Opus 4.0/4.1).
    assert (row.input_tokens, row.output_tokens) == (25, 12)
    assert row.cost_estimated
    assert row.cost_micros == (25 * 15_000_000 + 12 * 75_000_000 + 500_000) // 1_000_000


def test_unpriced_model_uses_the_organizations_fallback_model(gateway, governed):
    set_org(
        governed.organization,
        unpriced_models="fallback",
        unpriced_fallback_model="claude-haiku-4-5",
    )
    row = row_of(post(gateway, governed.secret, {**BODY, "model": "claude-nova-1"}))

    assert row.cost_estimated
    assert row.cost_micros == (25 * 1_000_000 + 12 * 5_000_000 + 500_000) // 1_000_000


def test_unpriced_model_settles_its_reservation(gateway, governed):
    """Settlement used to fail ("value is not an integer") and leave the reservation."""
    set_org(governed.organization, unpriced_models="fallback")
    ModelPrice.objects.all().delete()  # nothing to fall back on: the reservation is 0
    budget = factories.budget(owner=governed.team, amount_micros=10_000_000)
    for _ in range(3):
        assert post(gateway, governed.secret, {**BODY, "model": "claude-nova-1"}).status_code == 200

    rows = ledger_rows(3)
    assert all(row.cost_estimated and row.cost_micros == 0 for row in rows)
    assert counter_of(gateway, budget.pk) == 0  # settled 0, nothing left reserved


# --- item 2 (edge): model names -----------------------------------------------------------


@pytest.mark.parametrize("model", ["claude-" + "x" * 200, "claude-sonnet-4-6\x00", "claude\nx"])
def test_overlong_or_control_character_model_is_400(gateway, governed, fake_upstream, model):
    response = post(gateway, governed.secret, {**BODY, "model": model})

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "model" in response.json()["error"]["message"]
    assert fake_upstream.received == []
    row = row_of(response)
    assert (row.status, row.requested_model) == (400, "")


# --- item 4: a failed non-streamed read -----------------------------------------------------


def test_truncated_upstream_json_is_a_502_in_anthropic_shape(gateway, governed, fake_upstream):
    fake_upstream.default = Reply(truncate_body=True)

    response = post(gateway, governed.secret)

    assert response.status_code == 502
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "api_error"
    row = row_of(response)
    assert row.status == 502
    assert "could not be read" in row.error_message or "reading" in row.error_message


# --- item 5: provider budgets follow the provider tried --------------------------------------


@pytest.fixture
def two_providers(governed: Governed) -> Iterator[tuple[FakeAnthropic, FakeAnthropic]]:
    """Route claude-sonnet-4-6 to two providers at one position (weighted 1:1)."""
    first, second = FakeAnthropic().start(), FakeAnthropic().start()
    route = ModelRoute(public_name="claude-sonnet-4-6")
    common.save_instance(route, actor=ACTOR)
    for name, fake in (("alpha", first), ("beta", second)):
        provider = Provider(name=name, kind=Provider.Kind.ANTHROPIC, base_url=fake.base_url)
        common.save_instance(provider, actor=ACTOR)
        providers.set_credentials(
            actor=ACTOR, provider=provider, credentials={"api_key": UPSTREAM_KEY}
        )
        common.save_instance(
            Deployment(route=route, provider=provider, upstream_model="", weight=1), actor=ACTOR
        )
    yield first, second
    first.stop()
    second.stop()


def test_provider_budget_is_checked_for_the_provider_actually_tried(
    gateway, governed, two_providers
):
    alpha, beta = two_providers
    factories.budget(owner=governed.organization, amount_micros=0, provider_names=["alpha"])

    statuses = [post(gateway, governed.secret).status_code for _ in range(8)]

    assert statuses == [200] * 8
    assert alpha.received == [] and len(beta.received) == 8
    assert {row.provider for row in ledger_rows(8)} == {"beta"}


def test_failover_charges_the_provider_that_served(gateway, governed, two_providers):
    _, beta = two_providers
    # Alpha answers, beta is overloaded: when beta is tried first (a weighted shuffle) the
    # request fails over to alpha, whose budget must be charged and beta's released.
    beta.default = Reply(status=529)
    alpha_budget = factories.budget(
        owner=governed.organization, amount_micros=10_000_000, provider_names=["alpha"]
    )
    beta_budget = factories.budget(
        owner=governed.organization, amount_micros=10_000_000, provider_names=["beta"]
    )

    for _ in range(6):
        assert post(gateway, governed.secret).status_code == 200

    rows = ledger_rows(6)
    assert {row.provider for row in rows} == {"alpha"}
    for row in rows:  # every failover is told in the row, attempt by attempt
        if row.attempts == 2:
            log = json.loads(row.attempt_log)
            assert [(a["provider"], a["status"]) for a in log] == [("beta", 529), ("alpha", 200)]
        else:
            assert row.attempt_log == ""
    spent = sum(row.cost_micros for row in rows)
    assert spent > 0
    assert counter_of(gateway, alpha_budget.pk) == spent
    assert counter_of(gateway, beta_budget.pk) == 0


# --- item 6: a failing settlement loses nothing --------------------------------------------


def test_a_settlement_error_of_any_kind_keeps_the_ledger_row(gateway, governed, monkeypatch):
    store = gateway.runtime.store

    async def broken_settle(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unexpected counter store failure")

    monkeypatch.setattr(store, "settle", broken_settle)
    response = post(gateway, governed.secret)

    assert response.status_code == 200
    row = row_of(response)
    assert row.status == 200 and row.cost_micros > 0


def test_a_failing_health_read_before_forwarding_keeps_the_ledger_row(
    gateway, governed, monkeypatch
):
    """Admitted, then failing before the first attempt: answered 500, recorded, not lost."""

    async def broken_plan(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unexpected health store failure")

    monkeypatch.setattr(gateway.runtime.health, "plan", broken_plan)
    response = post(gateway, governed.secret)

    assert response.status_code == 500
    row = row_of(response)
    assert (row.status, row.error_type) == (500, "api_error")
    assert row.cost_micros == 0


# --- item 8: abuse ----------------------------------------------------------------------------


def test_the_key_is_checked_before_the_body_is_read(gateway, governed):
    """A client that announces a large body gets 401 without sending it."""
    host, port = gateway.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\n"
            b"x-api-key: sk-gw-not-a-key-00000000000000000000\r\n"
            b"content-type: application/json\r\ncontent-length: 10000000\r\n\r\n{"
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401")


def test_bytes_in_flight_are_capped_per_worker(gateway_small_inflight, governed):
    response = post(gateway_small_inflight, governed.secret, {**BODY, "pad": "x" * 5000})

    assert response.status_code == 503
    assert response.json()["error"]["type"] == "overloaded_error"
    assert response.headers["retry-after"] == "1"
    assert post(gateway_small_inflight, governed.secret).status_code == 200


@pytest.fixture
def gateway_small_inflight(settings, tmp_path):
    settings.GATEWAY_MAX_INFLIGHT_BODY_BYTES = 4000
    yield from _gateway(settings, tmp_path)


def _gateway(settings: Any, tmp_path: Path) -> Iterator[GatewayServer]:
    from tests.proxy.conftest import start_gateway

    settings.GATEWAY_POLICY_CHECK_SECONDS = 0
    settings.GATEWAY_SPOOL_DIR = str(tmp_path / "spool")
    server = start_gateway()
    yield server
    server.stop()


def test_a_repeated_revoked_key_does_not_lock_out_its_address(gateway_strict_auth, governed):
    gateway = gateway_strict_auth
    revoked = factories.issued_key(team=governed.team, name="old-script")
    keys.revoke_key(actor=ACTOR, key=revoked.key)

    statuses = [post(gateway, revoked.secret).status_code for _ in range(6)]

    assert statuses[:3] == [401, 401, 401] and statuses[-1] == 429  # the key, throttled
    fresh = factories.issued_key(team=governed.team, name="colleague")
    assert post(gateway, fresh.secret).status_code == 200  # the same address still works


@pytest.fixture
def gateway_strict_auth(settings, tmp_path):
    settings.GATEWAY_AUTH_FAILURES_PER_MINUTE = 3
    settings.GATEWAY_AUTH_FAILURES_PER_KEY_PER_MINUTE = 3
    yield from _gateway(settings, tmp_path)


def test_forwarded_for_is_believed_only_from_trusted_proxies(gateway_behind_proxy, governed):
    gateway = gateway_behind_proxy
    for i in range(3):
        guess = f"sk-gw-guess-{i:030d}"
        post(gateway, guess, headers={"x-forwarded-for": "203.0.113.7"})
    blocked = post(gateway, "sk-gw-guess-x" + "0" * 28, headers={"x-forwarded-for": "203.0.113.7"})
    other = post(gateway, "sk-gw-guess-y" + "0" * 28, headers={"x-forwarded-for": "198.51.100.9"})

    assert blocked.status_code == 429
    assert other.status_code == 401  # another client behind the same proxy is not locked out


@pytest.fixture
def gateway_behind_proxy(settings, tmp_path):
    settings.GATEWAY_AUTH_FAILURES_PER_MINUTE = 3
    settings.GATEWAY_TRUSTED_PROXIES = ["127.0.0.1"]
    yield from _gateway(settings, tmp_path)


def test_forwarded_headers_are_not_sent_upstream(gateway, governed, fake_upstream):
    post(
        gateway,
        governed.secret,
        headers={
            "x-forwarded-for": "10.1.2.3",
            "x-forwarded-host": "gateway.internal",
            "x-forwarded-proto": "https",
            "forwarded": "for=10.1.2.3",
            "x-real-ip": "10.1.2.3",
        },
    )

    sent = {name.lower() for name in fake_upstream.received[0].headers}
    assert not sent & {"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "forwarded"}
    assert "x-real-ip" not in sent


def test_a_cookie_an_upstream_sets_is_never_sent_on_a_later_request(
    gateway, governed, fake_upstream
):
    # By host name: cookie jars keep no cookies of bare IP addresses, real providers have names.
    by_name = Provider(
        name="named",
        kind=Provider.Kind.ANTHROPIC,
        base_url=fake_upstream.base_url.replace("127.0.0.1", "localhost"),
    )
    common.save_instance(by_name, actor=ACTOR)
    providers.set_credentials(actor=ACTOR, provider=by_name, credentials={"api_key": UPSTREAM_KEY})
    route = ModelRoute(public_name="claude-haiku-4-5")
    common.save_instance(route, actor=ACTOR)
    common.save_instance(Deployment(route=route, provider=by_name), actor=ACTOR)
    fake_upstream.queue(Reply(set_cookie="tenant=acme-backend; Path=/"))

    for _ in range(2):
        assert post(gateway, governed.secret, {**BODY, "model": "claude-haiku-4-5"}).is_success

    sent = [{name.lower() for name in r.headers} for r in fake_upstream.received]
    assert len(sent) == 2 and "cookie" not in sent[1]


def test_upstream_redirects_are_not_followed(gateway, governed, fake_upstream):
    elsewhere = FakeAnthropic().start()
    try:
        fake_upstream.default = Reply(redirect_to=elsewhere.base_url + "/v1/messages")
        response = post(gateway, governed.secret)
    finally:
        elsewhere.stop()

    assert response.status_code == 502
    assert elsewhere.received == []
    assert row_of(response).status == 502


def test_count_tokens_is_rate_limited_like_messages(gateway, governed, fake_upstream):
    factories.rate_limit(owner=governed.key, requests_per_minute=2)
    body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}
    within_one_window()

    statuses = [
        post(gateway, governed.secret, body, path="/v1/messages/count_tokens").status_code
        for _ in range(3)
    ]

    assert statuses == [200, 200, 429]
    assert len(fake_upstream.received) == 2


# --- item 12: model policy on the canonical model -----------------------------------------


def test_a_dated_snapshot_cannot_slip_past_a_deny_rule(gateway, governed, fake_upstream):
    factories.model_policy(owner=governed.team, denied_patterns=["claude-opus-4-6"])

    response = post(gateway, governed.secret, {**BODY, "model": "claude-opus-4-6-20260205"})

    assert response.status_code == 403
    assert fake_upstream.received == []


def test_an_alias_route_cannot_serve_a_denied_model(gateway, governed, fake_upstream):
    route = ModelRoute(public_name="claude-sonnet-turbo")
    common.save_instance(route, actor=ACTOR)
    common.save_instance(
        Deployment(route=route, provider=governed.provider, upstream_model="claude-opus-4-6"),
        actor=ACTOR,
    )
    factories.model_policy(owner=governed.team, allowed_patterns=["claude-sonnet-*"])

    response = post(gateway, governed.secret, {**BODY, "model": "claude-sonnet-turbo"})

    assert response.status_code == 403
    assert 'served as "claude-opus-4-6"' in response.json()["error"]["message"]
    assert fake_upstream.received == []


def test_a_tier_budget_applies_to_every_name_of_its_model(gateway, governed):
    factories.budget(
        owner=governed.team, amount_micros=1, model_patterns=["claude-sonnet-4-6"], period="day"
    )

    response = post(gateway, governed.secret, {**BODY, "model": "claude-sonnet-4-6-20260101"})

    assert response.status_code == 402


def test_spend_flows_through_with_bedrock_style_upstream_ids(gateway, governed):
    """The routed model recorded is the canonical id, so tier budgets and the ledger agree."""
    route = ModelRoute(public_name="sonnet-fast")
    common.save_instance(route, actor=ACTOR)
    common.save_instance(
        Deployment(
            route=route,
            provider=governed.provider,
            upstream_model="claude-sonnet-4-6-20260101",
        ),
        actor=ACTOR,
    )
    row = row_of(post(gateway, governed.secret, {**BODY, "model": "sonnet-fast"}))

    assert (row.requested_model, row.routed_model) == ("sonnet-fast", "claude-sonnet-4-6")


def test_a_routing_table_that_cannot_load_is_a_recorded_503(gateway, governed, monkeypatch):
    async def database_down() -> None:
        raise RuntimeError("could not connect to the database")

    monkeypatch.setattr(gateway.runtime.snapshots, "routing", database_down)

    response = post(gateway, governed.secret)

    assert response.status_code == 503
    assert response.json()["error"]["type"] == "api_error"
    assert row_of(response).status == 503
