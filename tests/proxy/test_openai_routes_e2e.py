"""The inbound OpenAI API in front of Claude, driven by the real `openai` SDK through a gateway."""

from __future__ import annotations

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests import factories
from tests.fakes.anthropic_upstream import Reply
from tests.proxy.conftest import GatewayServer, Governed, ledger_rows

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hi"},
]


def client(gateway: GatewayServer, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/openai/v1", api_key=secret, max_retries=0)


def test_chat_completion_is_governed_metered_and_translated(
    gateway, governed: Governed, fake_upstream
):
    fake_upstream.default = Reply(input_tokens=25, output_tokens=12, cache_read=100)

    reply = client(gateway, governed.secret).chat.completions.create(
        model="claude-sonnet-4-6", messages=PROMPT, max_tokens=50
    )

    assert reply.choices[0].message.content == "Hello from the fake upstream."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "claude-sonnet-4-6"
    # OpenAI's prompt tokens include the cached ones; Anthropic's input tokens do not.
    usage = reply.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (125, 12)
    assert usage.prompt_tokens_details.cached_tokens == 100
    sent = fake_upstream.received[0].json
    assert sent["system"] == [{"type": "text", "text": "Be brief."}] and sent["max_tokens"] == 50
    [row] = ledger_rows(1)
    assert (row.route, row.status, row.input_tokens, row.cache_read_tokens) == (
        "openai.chat",
        200,
        25,
        100,
    )
    # Sonnet 4.6: $3 input, $0.30 cache read, $15 output per MTok.
    assert row.cost_micros == (25 * 3_000_000 + 100 * 300_000 + 12 * 15_000_000 + 500_000) // (
        1_000_000
    )


def test_streamed_chat_completion_ends_with_the_usage_chunk(gateway, governed, fake_upstream):
    stream = client(gateway, governed.secret).chat.completions.create(
        model="claude-sonnet-4-6",
        messages=PROMPT,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    final_usage = chunks[-1].usage
    assert chunks[-1].choices == [] and final_usage is not None
    assert final_usage.completion_tokens == 12
    [row] = ledger_rows(1)
    assert (row.stream, row.output_tokens, row.route) == (True, 12, "openai.chat")


def test_a_budget_refusal_reaches_the_openai_client_as_402_with_the_request_id(
    gateway, governed, fake_upstream
):
    factories.budget(owner=governed.team, amount_micros=1, period="day")

    with pytest.raises(openai.APIStatusError) as refused:
        client(gateway, governed.secret).chat.completions.create(
            model="claude-sonnet-4-6", messages=PROMPT
        )

    assert refused.value.status_code == 402
    assert "Budget exhausted" in refused.value.message
    [row] = ledger_rows(1)
    assert refused.value.response.headers["x-gateway-request-id"] == row.request_id
    assert fake_upstream.received == []


def test_an_overloaded_upstream_is_503_for_openai_clients(gateway, governed, fake_upstream):
    fake_upstream.default = Reply(status=529)

    with pytest.raises(openai.APIStatusError) as failed:
        client(gateway, governed.secret).chat.completions.create(
            model="claude-sonnet-4-6", messages=PROMPT
        )

    assert failed.value.status_code == 503
    assert ledger_rows(1)[0].status == 529


def test_an_unknown_key_is_401_in_openai_shape(gateway, governed):
    with pytest.raises(openai.AuthenticationError) as refused:
        client(gateway, "sk-gw-not-a-key-000000000000000000000").models.list()

    assert refused.value.status_code == 401
    assert refused.value.response.json()["error"]["type"] == "invalid_request_error"


def test_models_lists_what_the_key_may_use(gateway, governed):
    factories.model_policy(owner=governed.team, denied_patterns=["claude-opus-*"])
    from governance.models import Deployment, ModelRoute
    from governance.services import common
    from tests.proxy.conftest import ACTOR

    for name in ("claude-sonnet-4-6", "claude-opus-4-6"):
        route = ModelRoute(public_name=name)
        common.save_instance(route, actor=ACTOR)
        common.save_instance(Deployment(route=route, provider=governed.provider), actor=ACTOR)

    names = [m.id for m in client(gateway, governed.secret).models.list()]

    assert "claude-sonnet-4-6" in names and "fake-anthropic/claude-sonnet-4-6" in names
    assert not any("opus" in name for name in names)


def test_an_untranslatable_request_is_400(gateway, governed, fake_upstream):
    with pytest.raises(openai.BadRequestError):
        client(gateway, governed.secret).chat.completions.create(
            model="claude-sonnet-4-6", messages=PROMPT, n=3
        )
    assert fake_upstream.received == []
    assert ledger_rows(1)[0].status == 400
