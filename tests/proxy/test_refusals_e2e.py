"""Every way a request can be refused or fail, as a client sees it."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from django.utils import timezone

from governance.models import Deployment, ModelPolicy, RateLimit
from governance.services import common, keys
from tests import factories
from tests.clock import within_one_window
from tests.fakes.anthropic_upstream import Reply
from tests.proxy.conftest import ACTOR, GatewayServer, ledger_rows

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 10,
    "messages": [{"role": "user", "content": "hi"}],
}


def post(gateway: GatewayServer, secret: str | None, body: object = BODY) -> httpx.Response:
    headers = {"x-api-key": secret} if secret else {}
    if isinstance(body, bytes):
        return httpx.post(
            gateway.anthropic_url + "/v1/messages",
            content=body,
            headers=headers,
            timeout=10,
        )
    return httpx.post(
        gateway.anthropic_url + "/v1/messages", json=body, headers=headers, timeout=10
    )


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    payload = response.json()
    assert payload["type"] == "error" and payload["request_id"]
    return response.status_code, payload["error"]["type"], payload["error"]["message"]


def test_missing_key_is_401(gateway, governed):
    status, kind, _ = error_of(post(gateway, None))
    assert (status, kind) == (401, "authentication_error")


def test_unknown_key_is_401_and_never_echoed(gateway, governed):
    response = post(gateway, "sk-gw-not-a-real-key-000000000000000")
    assert error_of(response)[:2] == (401, "authentication_error")
    assert "not-a-real-key" not in response.text


def test_revoked_key_is_rejected_at_once(gateway, governed):
    assert post(gateway, governed.secret).status_code == 200
    keys.revoke_key(actor=ACTOR, key=governed.key)
    assert error_of(post(gateway, governed.secret))[:2] == (401, "authentication_error")


def test_expired_key_is_rejected(gateway, governed):
    governed.key.expires_at = timezone.now() - dt.timedelta(minutes=1)
    common.save_instance(governed.key, actor=ACTOR)
    status, _, message = error_of(post(gateway, governed.secret))
    assert status == 401 and "expired" in message


@pytest.fixture
def three_auth_failures_per_minute(settings):
    settings.GATEWAY_AUTH_FAILURES_PER_MINUTE = 3  # read when the gateway starts


def test_repeated_auth_failures_from_one_address_are_throttled(
    three_auth_failures_per_minute, gateway, governed
):
    statuses = [post(gateway, f"sk-gw-guess-{i:030d}").status_code for i in range(5)]
    assert statuses[:3] == [401, 401, 401] and statuses[-1] == 429


def test_denied_model_is_403_naming_model_and_policy(gateway, governed):
    common.save_instance(
        ModelPolicy(team=governed.team, denied_patterns=["claude-opus-*"]), actor=ACTOR
    )
    status, kind, message = error_of(
        post(gateway, governed.secret, {**BODY, "model": "claude-opus-4-7"})
    )
    assert (status, kind) == (403, "permission_error")
    assert "claude-opus-4-7" in message and 'team "backend"' in message
    [row] = ledger_rows(1)
    assert row.status == 403


def test_tier_override_routes_opus_to_sonnet(gateway, governed, fake_upstream):
    common.save_instance(
        ModelPolicy(team=governed.team, overrides={"claude-opus-*": "claude-sonnet-4-6"}),
        actor=ACTOR,
    )
    assert post(gateway, governed.secret, {**BODY, "model": "claude-opus-4-7"}).status_code == 200
    assert fake_upstream.received[0].json["model"] == "claude-sonnet-4-6"


def test_exhausted_budget_is_402_naming_tier_limit_spent_and_reset(
    gateway, governed, fake_upstream
):
    factories.budget(owner=governed.team, amount_micros=300)  # $0.0003; one request costs $0.000255
    assert post(gateway, governed.secret).status_code == 200
    ledger_rows(1)
    status, kind, message = error_of(post(gateway, governed.secret))
    assert (status, kind) == (402, "billing_error")
    assert 'team "backend" monthly budget of $0.0003' in message
    assert "spent" in message and "resets on" in message and "Europe/Berlin" in message
    assert len(fake_upstream.received) == 1


def test_model_tier_budget_downgrades_instead_of_blocking(gateway, governed, fake_upstream):
    factories.budget(
        owner=governed.team,
        amount_micros=1,
        model_patterns=["claude-opus-*"],
        on_exhaust="downgrade",
        downgrade_model="claude-sonnet-4-6",
    )
    response = post(gateway, governed.secret, {**BODY, "model": "claude-opus-4-7"})
    assert response.status_code == 200
    assert fake_upstream.received[0].json["model"] == "claude-sonnet-4-6"
    [row] = ledger_rows(1)
    assert (row.requested_model, row.routed_model, row.downgraded_from) == (
        "claude-opus-4-7",
        "claude-sonnet-4-6",
        "claude-opus-4-7",
    )


def test_requests_per_minute_limit_is_429_with_retry_after(gateway, governed):
    common.save_instance(RateLimit(virtual_key=governed.key, requests_per_minute=2), actor=ACTOR)
    within_one_window()
    responses = [post(gateway, governed.secret) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert error_of(responses[2])[1] == "rate_limit_error"
    assert 1 <= int(responses[2].headers["retry-after"]) <= 61


def test_malformed_json_is_400(gateway, governed):
    status, kind, _ = error_of(post(gateway, governed.secret, b'{"model": "claude'))
    assert (status, kind) == (400, "invalid_request_error")


def test_missing_max_tokens_is_400(gateway, governed):
    body = {"model": "claude-sonnet-4-6", "messages": []}
    status, _, message = error_of(post(gateway, governed.secret, body))
    assert status == 400 and "max_tokens" in message


def test_oversize_body_is_413(gateway, governed, settings):
    settings.GATEWAY_MAX_BODY_BYTES = 1000
    status, kind, _ = error_of(post(gateway, governed.secret, {**BODY, "pad": "x" * 2000}))
    assert (status, kind) == (413, "request_too_large")


def test_unrouted_model_is_404(gateway, governed):
    status, kind, message = error_of(post(gateway, governed.secret, {**BODY, "model": "gpt-5"}))
    assert (status, kind) == (404, "not_found_error") and "gpt-5" in message


def test_upstream_529_reaches_the_client_as_529_and_is_recorded(gateway, governed, fake_upstream):
    fake_upstream.default = Reply(status=529, error_type="overloaded_error")
    status, kind, _ = error_of(post(gateway, governed.secret))
    assert (status, kind) == (529, "overloaded_error")
    [row] = ledger_rows(1)
    assert (row.status, row.error_type, row.cost_micros) == (529, "overloaded_error", 0)


def test_failover_to_the_next_deployment_after_529(gateway, governed, fake_upstream):
    route = Deployment.objects.get().route
    common.save_instance(
        Deployment(route=route, provider=governed.provider, upstream_model="", position=1),
        actor=ACTOR,
    )
    fake_upstream.queue(Reply(status=529))
    assert post(gateway, governed.secret).status_code == 200
    [row] = ledger_rows(1)
    assert row.attempts == 2 and row.status == 200


def test_upstream_credential_rejection_is_not_blamed_on_the_developer(
    gateway, governed, fake_upstream
):
    fake_upstream.default = Reply(status=401, error_type="authentication_error")
    status, kind, message = error_of(post(gateway, governed.secret))
    assert (status, kind) == (502, "api_error") and "fake-anthropic" in message


def test_mid_stream_error_event_reaches_the_client_and_partial_usage_is_billed(
    gateway, governed, fake_upstream
):
    fake_upstream.default = Reply(text="a b c d e f", deltas=3, stream_error_after=2)
    with httpx.stream(
        "POST",
        gateway.anthropic_url + "/v1/messages",
        headers={"x-api-key": governed.secret},
        json={**BODY, "stream": True},
        timeout=10,
    ) as response:
        body = response.read().decode()
    assert response.status_code == 200
    assert "event: error" in body and "overloaded_error" in body
    [row] = ledger_rows(1)
    assert row.error_type == "overloaded_error"
    assert (row.input_tokens, row.output_tokens) == (25, 2)  # the last cumulative value seen
    assert row.cost_micros == 25 * 3 + 2 * 15


def test_upstream_dropping_the_stream_ends_it_with_an_error_event(gateway, governed, fake_upstream):
    fake_upstream.default = Reply(text="a b c d e f", deltas=3, drop_after=1)
    with httpx.stream(
        "POST",
        gateway.anthropic_url + "/v1/messages",
        headers={"x-api-key": governed.secret},
        json={**BODY, "stream": True},
        timeout=10,
    ) as response:
        body = response.read().decode()
    assert "event: error" in body and "interrupted" in body
    [row] = ledger_rows(1)
    assert row.error_type == "api_error" and row.output_tokens == 1


def test_client_disconnect_mid_stream_closes_upstream_and_still_records_usage(
    gateway, governed, fake_upstream
):
    fake_upstream.default = Reply(text=" ".join(["w"] * 40), deltas=40, chunk_delay=0.05)
    with httpx.stream(
        "POST",
        gateway.anthropic_url + "/v1/messages",
        headers={"x-api-key": governed.secret},
        json={**BODY, "stream": True},
        timeout=10,
    ) as response:
        for chunk in response.iter_bytes():
            if b"content_block_delta" in chunk:
                break  # leave mid-stream
    [row] = ledger_rows(1)
    assert row.client_disconnected is True
    assert row.input_tokens == 25 and 1 <= row.output_tokens < 40
    assert row.cost_micros == 25 * 3 + row.output_tokens * 15
