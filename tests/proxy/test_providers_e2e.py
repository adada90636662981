"""Each alternative provider end to end: a real gateway in front of the project's fakes of AWS
Bedrock, Google Vertex AI and an OpenAI-compatible server, driven by the real `anthropic` and
`openai` SDKs, JSON and streaming. Every ledger row names the provider that served and carries
its exact token counts and its exact cost, worked out here by hand from the price book.

Also: provider-pinned model names (`bedrock/<id>`, `vertex/<model>`, `<provider>/<model>`), and
count_tokens on a route whose first provider cannot count tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import MessageParam, TextBlock

from telemetry.models import UsageRecord
from tests import factories
from tests.fakes.bedrock_upstream import Reply as BedrockReply
from tests.fakes.openai_upstream import Reply as OpenAIReply
from tests.fakes.vertex_upstream import Reply as VertexReply
from tests.proxy.conftest import GatewayServer, Governed, ledger_rows
from tests.proxy.provider_fakes import (
    BEDROCK_MODEL,
    LLAMA,
    VERTEX_MODEL,
    Clouds,
    bedrock_provider,
    openai_provider,
    price_llama,
    route,
    running_clouds,
    vertex_provider,
)

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT: list[MessageParam] = [{"role": "user", "content": "Say hello"}]
OPENAI_PROMPT: list[Any] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say hello"},
]
SONNET = "claude-sonnet-4-6"
HAIKU = "claude-haiku-4-5"

# Bedrock and Vertex answer with cache reads and both kinds of cache write.
BEDROCK_CACHED = BedrockReply(
    input_tokens=31, output_tokens=17, cache_read=1200, cache_write_5m=300, cache_write_1h=80
)
VERTEX_CACHED = VertexReply(
    input_tokens=31, output_tokens=17, cache_read=1200, cache_write_5m=300, cache_write_1h=80
)
CLAUDE_TOKENS = (31, 17, 1200, 300, 80)
# Sonnet 4.6 per MTok: $3 input, $15 output, $0.30 cache read, $3.75 / $6 5-minute / 1-hour
# cache write. Micro-dollars, rounded half up.
SONNET_COST = (
    31 * 3_000_000 + 17 * 15_000_000 + 1200 * 300_000 + 300 * 3_750_000 + 80 * 6_000_000 + 500_000
) // 1_000_000
# The OpenAI-compatible server: 300 prompt tokens of which 100 cached, 40 completion tokens,
# i.e. Anthropic's 200 input + 100 cache read. Llama per MTok: $0.59 input, $0.295 cached,
# $0.79 output.
LLAMA_REPLY = OpenAIReply(
    text="Hello from the fake OpenAI upstream.",
    prompt_tokens=300,
    cached_tokens=100,
    completion_tokens=40,
)
LLAMA_COST = (200 * 590_000 + 100 * 295_000 + 40 * 790_000 + 500_000) // 1_000_000


@pytest.fixture
def clouds(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Clouds]:
    with running_clouds(monkeypatch, tmp_path) as running:
        yield running


def anthropic_client(gateway: GatewayServer, secret: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.anthropic_url, api_key=secret, max_retries=0)


def openai_client(gateway: GatewayServer, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/openai/v1", api_key=secret, max_retries=0)


@dataclass(frozen=True)
class Served:
    """What one provider's case must show: in the answer, upstream, and in the ledger."""

    cloud: str
    model: str  # what the client asks for
    provider: str
    routed: str  # the canonical model of the deployment
    served: str
    text: str
    tokens: tuple[int, int, int, int, int]  # input, output, cache read, 5m write, 1h write
    cost: int = SONNET_COST

    @property
    def prompt_tokens(self) -> int:
        """OpenAI's prompt tokens: the input and every cached token."""
        input_tokens, _, read, write_5m, write_1h = self.tokens
        return input_tokens + read + write_5m + write_1h


def serve(cloud: str, clouds: Clouds) -> Served:
    """Route the case's model to `cloud`'s fake, which answers with known usage."""
    if cloud == "bedrock":
        clouds.bedrock.default = BEDROCK_CACHED
        route(SONNET, (bedrock_provider(clouds.bedrock), BEDROCK_MODEL))
        return Served(
            cloud, SONNET, "bedrock-east", SONNET, SONNET, BEDROCK_CACHED.text, CLAUDE_TOKENS
        )
    if cloud == "vertex":
        clouds.vertex.default = VERTEX_CACHED
        route(SONNET, (vertex_provider(clouds.vertex), VERTEX_MODEL))
        return Served(
            cloud, SONNET, "vertex-main", SONNET, SONNET, VERTEX_CACHED.text, CLAUDE_TOKENS
        )
    # Claude Code's Haiku tier sent to a cheaper model on an OpenAI-compatible server.
    clouds.openai.default = LLAMA_REPLY
    price_llama()
    route(HAIKU, (openai_provider(clouds.openai), LLAMA))
    text = str(LLAMA_REPLY.text)
    return Served(cloud, HAIKU, "groq", LLAMA, LLAMA, text, (200, 40, 100, 0, 0), LLAMA_COST)


def assert_upstream_saw_one(case: Served, clouds: Clouds, *, stream: bool) -> None:
    """The request reached the provider in its own wire format, authenticated."""
    if case.cloud == "bedrock":
        [received] = clouds.bedrock.received
        assert clouds.bedrock.refused == []  # the fake verified the SigV4 signature
        action = "invoke-with-response-stream" if stream else "invoke"
        assert (received.model, received.action) == (BEDROCK_MODEL, action)
    elif case.cloud == "vertex":
        [received_v] = clouds.vertex.received
        assert clouds.vertex.refused == []  # a bearer token of the fake's token endpoint
        method = "streamRawPredict" if stream else "rawPredict"
        assert (received_v.location, received_v.model, received_v.method) == (
            "us-east5",
            VERTEX_MODEL,
            method,
        )
    else:
        [sent] = clouds.openai.chat_requests
        assert sent["model"] == LLAMA and bool(sent.get("stream")) is stream


def assert_row(row: UsageRecord, case: Served, *, route_name: str, stream: bool) -> None:
    assert (row.status, row.route, row.stream) == (200, route_name, stream)
    assert (row.provider, row.requested_model) == (case.provider, case.model)
    assert (row.routed_model, row.served_model) == (case.routed, case.served)
    assert (
        row.input_tokens,
        row.output_tokens,
        row.cache_read_tokens,
        row.cache_write_5m_tokens,
        row.cache_write_1h_tokens,
    ) == case.tokens
    assert (row.cost_micros, row.cost_estimated) == (case.cost, False)
    assert (row.attempts, row.attempt_log) == (1, "")


CLOUDS = ["bedrock", "vertex", "openai"]


# --- the anthropic SDK ----------------------------------------------------------------------


@pytest.mark.parametrize("cloud", CLOUDS)
def test_anthropic_sdk_json_reply_from_each_provider_is_metered_at_its_exact_cost(
    gateway, governed: Governed, fake_upstream, clouds, cloud
):
    case = serve(cloud, clouds)

    reply = anthropic_client(gateway, governed.secret).messages.create(
        model=case.model, max_tokens=100, messages=PROMPT
    )

    assert isinstance(reply.content[0], TextBlock) and reply.content[0].text == case.text
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == case.tokens[:2]
    assert reply.usage.cache_read_input_tokens == case.tokens[2]
    assert_upstream_saw_one(case, clouds, stream=False)
    assert fake_upstream.received == []
    [row] = ledger_rows(1)
    assert_row(row, case, route_name="anthropic.messages", stream=False)


@pytest.mark.parametrize("cloud", CLOUDS)
def test_anthropic_sdk_stream_from_each_provider_is_metered_at_its_exact_cost(
    gateway, governed: Governed, fake_upstream, clouds, cloud
):
    case = serve(cloud, clouds)

    with anthropic_client(gateway, governed.secret).messages.stream(
        model=case.model, max_tokens=100, messages=PROMPT
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == case.text
    assert (final.usage.input_tokens, final.usage.output_tokens) == case.tokens[:2]
    assert final.stop_reason == "end_turn"
    assert_upstream_saw_one(case, clouds, stream=True)
    [row] = ledger_rows(1)
    assert_row(row, case, route_name="anthropic.messages", stream=True)
    assert row.ttfb_ms is not None


# --- the openai SDK -------------------------------------------------------------------------


@pytest.mark.parametrize("cloud", CLOUDS)
def test_openai_sdk_chat_completion_from_each_provider_is_metered_at_its_exact_cost(
    gateway, governed: Governed, clouds, cloud
):
    case = serve(cloud, clouds)

    reply = openai_client(gateway, governed.secret).chat.completions.create(
        model=case.model, messages=OPENAI_PROMPT, max_tokens=100
    )

    assert reply.choices[0].message.content == case.text
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
        case.prompt_tokens,
        case.tokens[1],
    )
    assert reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == case.tokens[2]
    assert_upstream_saw_one(case, clouds, stream=False)
    [row] = ledger_rows(1)
    assert_row(row, case, route_name="openai.chat", stream=False)


@pytest.mark.parametrize("cloud", CLOUDS)
def test_openai_sdk_stream_from_each_provider_ends_with_usage_and_exact_cost(
    gateway, governed: Governed, clouds, cloud
):
    case = serve(cloud, clouds)

    chunks = list(
        openai_client(gateway, governed.secret).chat.completions.create(
            model=case.model,
            messages=OPENAI_PROMPT,
            max_tokens=100,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == case.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (case.prompt_tokens, case.tokens[1])
    assert_upstream_saw_one(case, clouds, stream=True)
    [row] = ledger_rows(1)
    assert_row(row, case, route_name="openai.chat", stream=True)


# --- provider-pinned names --------------------------------------------------------------------


@pytest.fixture
def sonnet_everywhere(governed: Governed, clouds: Clouds) -> None:
    """claude-sonnet-4-6 on the Anthropic fake first, then Bedrock, then Vertex; the
    OpenAI-compatible provider serves no route (only pinned names reach it)."""
    route(
        SONNET,
        (governed.provider, ""),
        (bedrock_provider(clouds.bedrock), BEDROCK_MODEL),
        (vertex_provider(clouds.vertex), VERTEX_MODEL),
    )
    openai_provider(clouds.openai)
    price_llama()
    clouds.openai.default = LLAMA_REPLY


# Default replies: 25 input and 12 output tokens at Sonnet 4.6's $3 / $15 per MTok.
PINNED_SONNET_COST = (25 * 3_000_000 + 12 * 15_000_000 + 500_000) // 1_000_000


@pytest.mark.usefixtures("sonnet_everywhere")
@pytest.mark.parametrize(
    "pinned",  # the model asked for, the fake that must serve it, its provider, routed model
    [
        (f"bedrock/{BEDROCK_MODEL}", "bedrock", "bedrock-east", SONNET),  # a Bedrock id, by kind
        (f"bedrock-east/{SONNET}", "bedrock", "bedrock-east", SONNET),  # by name, on the route
        (f"vertex/{SONNET}", "vertex", "vertex-main", SONNET),
        (f"groq/{LLAMA}", "openai", "groq", LLAMA),  # a provider no route of the model uses
        (f"anthropic/{SONNET}", "anthropic", "fake-anthropic", SONNET),
        (SONNET, "anthropic", "fake-anthropic", SONNET),  # the plain name: the route's order
    ],
    ids=lambda pinned: pinned[0],
)
def test_a_provider_pinned_name_is_served_by_that_provider(
    gateway, governed, fake_upstream, clouds, pinned
):
    model, cloud, provider, routed = pinned
    reply = anthropic_client(gateway, governed.secret).messages.create(
        model=model, max_tokens=100, messages=PROMPT
    )

    reached = {
        "anthropic": len(fake_upstream.received),
        "bedrock": len(clouds.bedrock.received),
        "vertex": len(clouds.vertex.received),
        "openai": len(clouds.openai.chat_requests),
    }
    assert reached == {name: int(name == cloud) for name in reached}
    assert reply.content
    [row] = ledger_rows(1)
    assert (row.status, row.provider, row.requested_model, row.routed_model) == (
        200,
        provider,
        model,
        routed,
    )
    assert row.cost_micros == (LLAMA_COST if cloud == "openai" else PINNED_SONNET_COST)
    if cloud == "bedrock":
        assert clouds.bedrock.received[0].model == BEDROCK_MODEL


@pytest.mark.usefixtures("sonnet_everywhere")
def test_a_pinned_provider_id_cannot_slip_past_a_deny_rule(gateway, governed, clouds):
    factories.model_policy(owner=governed.team, denied_patterns=[SONNET])

    with pytest.raises(anthropic.PermissionDeniedError):
        anthropic_client(gateway, governed.secret).messages.create(
            model=f"bedrock/{BEDROCK_MODEL}", max_tokens=100, messages=PROMPT
        )

    assert clouds.bedrock.received == []
    assert ledger_rows(1)[0].status == 403


# --- count_tokens on a provider that cannot count -----------------------------------------------


def test_count_tokens_skips_a_provider_that_cannot_count(
    gateway, governed: Governed, fake_upstream, clouds
):
    route(HAIKU, (openai_provider(clouds.openai), LLAMA), (governed.provider, ""))

    counted = anthropic_client(gateway, governed.secret).messages.count_tokens(
        model=HAIKU, messages=PROMPT
    )

    assert counted.input_tokens == 25  # the Anthropic fake's count
    assert clouds.openai.received == []
    [received] = fake_upstream.received
    assert received.path == "/v1/messages/count_tokens"
    assert received.json["model"] == HAIKU


def test_count_tokens_on_a_route_that_cannot_count_is_404(
    gateway, governed: Governed, fake_upstream, clouds
):
    route(HAIKU, (openai_provider(clouds.openai), LLAMA))

    with pytest.raises(anthropic.NotFoundError) as refused:
        anthropic_client(gateway, governed.secret).messages.count_tokens(
            model=HAIKU, messages=PROMPT
        )

    assert refused.value.status_code == 404
    error = refused.value.body["error"]  # type: ignore[index]
    assert error["type"] == "not_found_error" and "count_tokens" in error["message"]
    assert clouds.openai.received == [] and fake_upstream.received == []
