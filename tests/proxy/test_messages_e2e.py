"""The Anthropic route end to end: real server, fake upstream, real `anthropic` SDK."""

from __future__ import annotations

import anthropic
import httpx
import pytest
from anthropic.types import MessageParam, TextBlock

from telemetry.models import UsageRecord
from tests.fakes.anthropic_upstream import FakeAnthropic, Reply
from tests.proxy.conftest import UPSTREAM_KEY, GatewayServer, Governed, ledger_rows

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT: list[MessageParam] = [{"role": "user", "content": "Say hello"}]


def client(gateway: GatewayServer, secret: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.anthropic_url, api_key=secret, max_retries=0)


def assert_secret_never_forwarded(fake: FakeAnthropic, secret: str) -> None:
    for received in fake.received:
        assert received.headers.get("x-api-key") == UPSTREAM_KEY
        assert "Authorization" not in received.headers
        assert all(secret not in value for value in received.headers.values())
        assert secret.encode() not in received.body


def test_json_reply_arrives_intact_and_is_metered_exactly(
    gateway, governed: Governed, fake_upstream
):
    reply = client(gateway, governed.secret).messages.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=PROMPT
    )
    assert isinstance(reply.content[0], TextBlock)
    assert reply.content[0].text == "Hello from the fake upstream."
    assert reply.usage.input_tokens == 25
    assert_secret_never_forwarded(fake_upstream, governed.secret)
    [row] = ledger_rows(1)
    assert (row.status, row.input_tokens, row.output_tokens) == (200, 25, 12)
    # Sonnet 4.6: $3 / MTok input, $15 / MTok output.
    assert row.cost_micros == 25 * 3 + 12 * 15
    assert row.key_id == governed.key.pk and row.team_id == governed.team.pk
    assert row.provider == "fake-anthropic" and row.stream is False


def test_stream_is_relayed_and_metered_from_the_final_delta(gateway, governed, fake_upstream):
    fake_upstream.default = Reply(text="one two three four five six", output_tokens=40)
    with client(gateway, governed.secret).messages.stream(
        model="claude-sonnet-4-6", max_tokens=100, messages=PROMPT
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "one two three four five six"
    assert final.usage.output_tokens == 40
    [row] = ledger_rows(1)
    assert row.stream and row.output_tokens == 40 and row.input_tokens == 25
    assert row.cost_micros == 25 * 3 + 40 * 15
    assert row.ttfb_ms is not None


def test_api_key_header_style_works_like_bearer(gateway, governed, fake_upstream):
    response = httpx.post(
        gateway.anthropic_url + "/v1/messages",
        headers={"x-api-key": governed.secret, "anthropic-version": "2023-06-01"},
        json={"model": "claude-sonnet-4-6", "max_tokens": 10, "messages": PROMPT},
    )
    assert response.status_code == 200
    assert_secret_never_forwarded(fake_upstream, governed.secret)


def test_cache_read_and_one_hour_cache_write_are_priced_separately(
    gateway, governed, fake_upstream
):
    fake_upstream.default = Reply(
        input_tokens=100, output_tokens=50, cache_read=2000, cache_write_1h=1000, cache_write_5m=400
    )
    client(gateway, governed.secret).messages.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=PROMPT
    )
    [row] = ledger_rows(1)
    assert (row.cache_read_tokens, row.cache_write_1h_tokens, row.cache_write_5m_tokens) == (
        2000,
        1000,
        400,
    )
    # input $3, output $15, cache read $0.30, 1h write $6, 5m write $3.75 per MTok.
    expected_picos = (
        100 * 3_000_000 + 50 * 15_000_000 + 2000 * 300_000 + 1000 * 6_000_000 + 400 * 3_750_000
    )
    assert row.cost_micros == expected_picos // 1_000_000 == 9150


def test_request_is_priced_by_the_model_that_answered(gateway, governed, fake_upstream):
    fake_upstream.default = Reply(
        model="claude-haiku-4-5-20251001", input_tokens=1000, output_tokens=1000
    )
    client(gateway, governed.secret).messages.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=PROMPT
    )
    [row] = ledger_rows(1)
    assert row.served_model == "claude-haiku-4-5-20251001"
    assert row.cost_micros == 1000 * 1 + 1000 * 5  # Haiku 4.5: $1 / $5


def test_beta_query_version_and_unknown_fields_are_forwarded_untouched(
    gateway, governed, fake_upstream
):
    body = (
        b'{"model":"claude-sonnet-4-6","max_tokens":5,"messages":[{"role":"user","content":"x"},'
        b'{"role":"system","content":"env","output_config":{"effort":"medium"}}],'
        b'"context_management":{"edits":[]},"safeguards":{"a":1}}'
    )
    response = httpx.post(
        gateway.anthropic_url + "/v1/messages?beta=true",
        content=body,
        headers={
            "x-api-key": governed.secret,
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
            "content-type": "application/json",
        },
    )
    assert response.status_code == 200
    [received] = fake_upstream.received
    assert received.query == "beta=true"
    assert received.body == body
    assert (
        received.headers["anthropic-beta"] == "claude-code-20250219,interleaved-thinking-2025-05-14"
    )
    assert received.headers["anthropic-version"] == "2023-06-01"


def test_claude_code_attribution_is_recorded(gateway, governed, fake_upstream):
    metadata = (
        '{"device_id":"d","account_uuid":"","session_id":"5f1c0e6e-1111-2222-3333-444455556666"}'
    )
    httpx.post(
        gateway.anthropic_url + "/v1/messages?beta=true",
        headers={
            "x-api-key": governed.secret,
            "user-agent": "claude-cli/2.1.332 (external, sdk-cli)",
            "x-claude-code-agent-id": "a0123456789abcdef",
            "x-claude-code-parent-agent-id": "a1111111111111111",
        },
        json={
            "model": "claude-sonnet-4-6",
            "max_tokens": 5,
            "messages": PROMPT,
            "metadata": {"user_id": metadata},
            "stream": True,
        },
    )
    [row] = ledger_rows(1)
    assert row.session_id == "5f1c0e6e-1111-2222-3333-444455556666"
    assert (row.client_name, row.client_version) == ("claude-cli", "2.1.332")
    assert (row.agent_id, row.parent_agent_id) == ("a0123456789abcdef", "a1111111111111111")


def test_count_tokens_and_models_answer_for_the_key(gateway, governed, fake_upstream):
    sdk = client(gateway, governed.secret)
    assert sdk.messages.count_tokens(model="claude-sonnet-4-6", messages=PROMPT).input_tokens == 25
    assert UsageRecord.objects.count() == 0  # free upstream: no ledger row
    response = httpx.get(
        gateway.anthropic_url + "/v1/models", headers={"x-api-key": governed.secret}
    )
    assert response.status_code == 200 and response.json()["has_more"] is False
