"""Failover across providers through a real gateway, driven by the real `anthropic` SDK.

The primary (the Anthropic fake, a hung upstream, a closed port, or the Bedrock, Vertex or
OpenAI-compatible fake) fails before the first byte: the request is served by a secondary of
another provider (the Bedrock or Vertex fake), the ledger row tells every attempt, the cost is
the secondary's and so is the provider budget charged. A stream that breaks after its first
bytes is not retried. A deployment that keeps failing cools down, is skipped, then probed back.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types import MessageParam

from governance.models import Provider
from proxy import runtime as proxy_runtime
from proxy.health import State
from proxy.upstream import Timeouts, UpstreamClient
from telemetry.models import UsageRecord
from tests import factories
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.anthropic_upstream import Reply as AnthropicReply
from tests.fakes.bedrock_upstream import Reply as BedrockReply
from tests.fakes.openai_upstream import Reply as OpenAIReply
from tests.fakes.vertex_upstream import Reply as VertexReply
from tests.proxy.conftest import GatewayServer, Governed, ledger_rows, start_gateway, wait_for
from tests.proxy.provider_fakes import (
    BEDROCK_MODEL,
    LLAMA,
    VERTEX_MODEL,
    Clouds,
    anthropic_provider,
    bedrock_provider,
    breaker_state,
    closed_port_url,
    counter_of,
    openai_provider,
    price_llama,
    route,
    running_clouds,
    silent_listener,
    vertex_provider,
)

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT: list[MessageParam] = [{"role": "user", "content": "Say hello"}]
SONNET = "claude-sonnet-4-6"
# Long enough for a fake to answer on a busy machine, short enough for a test to wait out.
READ_TIMEOUT = 1.0
COOLDOWN_SECONDS = 2.0
# The secondaries answer with usage unlike the primary's (25 / 12), so the cost tells who served.
BEDROCK_SECONDARY = BedrockReply(input_tokens=40, output_tokens=20, cache_read=1000)
VERTEX_SECONDARY = VertexReply(input_tokens=40, output_tokens=20, cache_read=1000)
# Sonnet 4.6 per MTok: $3 input, $15 output, $0.30 cache read.
SECONDARY_COST = (40 * 3_000_000 + 20 * 15_000_000 + 1000 * 300_000 + 500_000) // 1_000_000


@pytest.fixture
def clouds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Clouds]:
    with running_clouds(monkeypatch, tmp_path) as running:
        yield running


@pytest.fixture
def gateway(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GatewayServer]:
    """The gateway with a short upstream read timeout (a hung primary fails over within a
    second) and a short cooldown (a tripped deployment is probed back within seconds)."""
    settings.GATEWAY_POLICY_CHECK_SECONDS = 0
    settings.GATEWAY_SPOOL_DIR = str(tmp_path / "spool")
    settings.GATEWAY_COOLDOWN_SECONDS = COOLDOWN_SECONDS
    monkeypatch.setattr(
        proxy_runtime,
        "UpstreamClient",
        functools.partial(UpstreamClient, Timeouts(connect=5.0, read=READ_TIMEOUT)),
    )
    server = start_gateway()
    yield server
    server.stop()


def client(gateway: GatewayServer, secret: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.anthropic_url, api_key=secret, max_retries=0)


def ask(gateway: GatewayServer, secret: str, *, stream: bool = False) -> str:
    """One request for claude-sonnet-4-6; the answer's text."""
    if not stream:
        reply = client(gateway, secret).messages.create(
            model=SONNET, max_tokens=100, messages=PROMPT
        )
        return "".join(block.text for block in reply.content if block.type == "text")
    with client(gateway, secret).messages.stream(
        model=SONNET, max_tokens=100, messages=PROMPT
    ) as events:
        return "".join(events.text_stream)


def deployment_on(cloud: str, clouds: Clouds) -> tuple[Provider, str]:
    """A provider of `cloud`'s fake and the upstream model it serves claude-sonnet-4-6 as."""
    if cloud == "bedrock":
        return bedrock_provider(clouds.bedrock), BEDROCK_MODEL
    if cloud == "vertex":
        return vertex_provider(clouds.vertex), VERTEX_MODEL
    price_llama()
    return openai_provider(clouds.openai), LLAMA


def calls_to(cloud: str, clouds: Clouds) -> int:
    if cloud == "openai":
        return len(clouds.openai.chat_requests)
    return len(clouds.bedrock.received if cloud == "bedrock" else clouds.vertex.received)


def set_reply(cloud: str, clouds: Clouds, reply: Any) -> None:
    if cloud == "bedrock":
        clouds.bedrock.default = reply
    elif cloud == "vertex":
        clouds.vertex.default = reply
    else:
        clouds.openai.default = reply


def secondary(cloud: str, clouds: Clouds) -> tuple[Provider, str, str]:
    """The secondary provider (Bedrock or Vertex), its upstream model and its answer's text
    (with the usage of SECONDARY_COST)."""
    reply = BEDROCK_SECONDARY if cloud == "bedrock" else VERTEX_SECONDARY
    set_reply(cloud, clouds, reply)
    provider, upstream_model = deployment_on(cloud, clouds)
    return provider, upstream_model, reply.text


def attempts_of(row: UsageRecord) -> list[tuple[str, str, int]]:
    return [(a["provider"], a["model"], a["status"]) for a in json.loads(row.attempt_log)]


# --- failover before the first byte ---------------------------------------------------------


@pytest.mark.parametrize(
    "scenario",  # how the primary fails, the secondary's provider kind, streamed or not
    [
        ("429", "bedrock", False),
        ("529", "vertex", True),
        ("500", "bedrock", True),
        ("timeout", "vertex", False),
        ("timeout", "bedrock", True),
        ("refused", "bedrock", False),
        ("refused", "vertex", True),
    ],
    ids=lambda s: f"{s[0]}-{s[1]}-{'stream' if s[2] else 'json'}",
)
def test_a_failing_primary_is_served_by_another_providers_secondary(
    gateway, governed: Governed, fake_upstream: FakeAnthropic, clouds, scenario
):
    failure, cloud, stream = scenario
    with silent_listener() as hung_url:
        if failure == "timeout":
            primary = anthropic_provider(hung_url, "anthropic-primary")
        elif failure == "refused":
            primary = anthropic_provider(closed_port_url(), "anthropic-primary")
        else:
            fake_upstream.default = AnthropicReply(status=int(failure))
            primary = anthropic_provider(fake_upstream.base_url, "anthropic-primary")
        backup, upstream_model, text = secondary(cloud, clouds)
        route(SONNET, (primary, ""), (backup, upstream_model))
        primary_budget, secondary_budget = (
            factories.budget(
                owner=governed.organization, amount_micros=10_000_000, provider_names=[provider]
            )
            for provider in (primary.name, backup.name)
        )

        assert ask(gateway, governed.secret, stream=stream) == text

    assert calls_to(cloud, clouds) == 1
    assert len(fake_upstream.received) == (0 if failure in ("timeout", "refused") else 1)
    [row] = ledger_rows(1)
    assert (row.status, row.provider, row.stream) == (200, backup.name, stream)
    assert (row.input_tokens, row.output_tokens, row.cache_read_tokens) == (40, 20, 1000)
    assert row.cost_micros == SECONDARY_COST
    primary_status = 0 if failure in ("timeout", "refused") else int(failure)
    assert row.attempts == 2
    assert attempts_of(row) == [
        ("anthropic-primary", SONNET, primary_status),
        (backup.name, upstream_model, 200),
    ]
    if primary_status == 0:  # no answer: the log says why
        assert json.loads(row.attempt_log)[0]["error"]
    wait_for(lambda: counter_of(gateway, secondary_budget.pk) == SECONDARY_COST)
    assert counter_of(gateway, primary_budget.pk) == 0


STREAM_ERROR = "internalServerException"  # as Bedrock names exceptions in an event stream
BEDROCK_UNAVAILABLE = BedrockReply(status=503, error_type="ServiceUnavailableException")


@pytest.mark.parametrize(
    "scenario",  # the primary's kind, its failure, the status it is logged with, the secondary
    [
        ("bedrock", BedrockReply(status=429), 429, "vertex"),  # ThrottlingException
        ("bedrock", BedrockReply(exception_first=True), 429, "vertex"),  # in the event stream
        ("bedrock", BEDROCK_UNAVAILABLE, 529, "vertex"),
        ("vertex", VertexReply(status=429), 429, "bedrock"),  # RESOURCE_EXHAUSTED
        ("vertex", VertexReply(status=503, google_status="UNAVAILABLE"), 529, "bedrock"),
        ("openai", OpenAIReply(status=429, error_type="rate_limit_exceeded"), 429, "bedrock"),
        ("openai", OpenAIReply(status=503), 529, "vertex"),
        ("openai", OpenAIReply(stream_error_after=0), 500, "vertex"),  # an error chunk first
    ],
    ids=[
        "bedrock-throttled",
        "bedrock-stream-exception",
        "bedrock-unavailable",
        "vertex-exhausted",
        "vertex-unavailable",
        "openai-rate-limited",
        "openai-unavailable",
        "openai-error-chunk",
    ],
)
def test_a_failing_primary_of_any_kind_is_served_by_another_kind(
    gateway, governed: Governed, clouds, scenario
):
    cloud, failure, status, other = scenario
    set_reply(cloud, clouds, failure)
    primary, primary_model = deployment_on(cloud, clouds)
    backup, upstream_model, text = secondary(other, clouds)
    route(SONNET, (primary, primary_model), (backup, upstream_model))

    assert ask(gateway, governed.secret, stream=True) == text

    assert (calls_to(cloud, clouds), calls_to(other, clouds)) == (1, 1)
    [row] = ledger_rows(1)
    assert (row.status, row.provider, row.cost_micros) == (200, backup.name, SECONDARY_COST)
    assert attempts_of(row) == [
        (primary.name, primary_model, status),
        (backup.name, upstream_model, 200),
    ]


# --- never mid-stream -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",  # the primary's broken stream, and the error type the client gets
    [
        (AnthropicReply(drop_after=1), "api_error"),  # the connection is cut
        (AnthropicReply(stream_error_after=1), "overloaded_error"),  # an `error` event
    ],
    ids=["dropped", "error-event"],
)
def test_a_stream_that_breaks_after_its_first_bytes_is_not_retried(
    gateway, governed: Governed, fake_upstream: FakeAnthropic, clouds, fault
):
    fake_upstream.default, error_type = fault
    backup, upstream_model, _ = secondary("bedrock", clouds)
    route(SONNET, (governed.provider, ""), (backup, upstream_model))
    pieces: list[str] = []

    with (
        pytest.raises(anthropic.APIStatusError) as failed,
        client(gateway, governed.secret).messages.stream(
            model=SONNET, max_tokens=100, messages=PROMPT
        ) as events,
    ):
        pieces.extend(events.text_stream)

    assert pieces == ["Hello"]  # the first delta reached the client, then the error
    assert failed.value.body["error"]["type"] == error_type  # type: ignore[index]
    assert clouds.bedrock.received == []
    [row] = ledger_rows(1)
    assert (row.provider, row.attempts, row.attempt_log) == ("fake-anthropic", 1, "")
    assert (row.status, row.error_type) == (200, error_type)
    # The partial usage: message_start's input, the output counted up to the break.
    assert (row.input_tokens, row.output_tokens) == (25, 1)
    assert row.cost_micros == (25 * 3_000_000 + 1 * 15_000_000 + 500_000) // 1_000_000


@pytest.mark.parametrize(
    "fault",  # the primary's kind and broken stream, the secondary
    [
        ("bedrock", BedrockReply(exception_after=1, error_type=STREAM_ERROR), "vertex"),
        ("vertex", VertexReply(drop_after=1), "bedrock"),
        ("openai", OpenAIReply(text="Hello there", drop_after=2), "bedrock"),
    ],
    ids=["bedrock-exception", "vertex-dropped", "openai-dropped"],
)
def test_a_broken_stream_of_any_provider_is_not_retried(gateway, governed: Governed, clouds, fault):
    cloud, reply, other = fault
    set_reply(cloud, clouds, reply)
    primary, primary_model = deployment_on(cloud, clouds)
    backup, upstream_model, _ = secondary(other, clouds)
    route(SONNET, (primary, primary_model), (backup, upstream_model))
    pieces: list[str] = []

    with (
        pytest.raises(anthropic.APIStatusError) as failed,
        client(gateway, governed.secret).messages.stream(
            model=SONNET, max_tokens=100, messages=PROMPT
        ) as events,
    ):
        pieces.extend(events.text_stream)

    assert len(pieces) == 1  # the first delta reached the client, then the error event
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert (calls_to(cloud, clouds), calls_to(other, clouds)) == (1, 0)
    [row] = ledger_rows(1)
    assert (row.provider, row.attempts, row.attempt_log) == (primary.name, 1, "")
    assert (row.status, row.error_type) == (200, "api_error")
    if cloud != "openai":
        assert (row.input_tokens, row.output_tokens) == (25, 1)
        assert row.cost_micros == (25 * 3_000_000 + 1 * 15_000_000 + 500_000) // 1_000_000
    else:  # an OpenAI stream tells its usage only in its last chunk: the prompt is estimated
        assert row.cost_estimated and row.input_tokens > 0 and row.cost_micros > 0


# --- cooldown -------------------------------------------------------------------------------


def ask_until(gateway: GatewayServer, secret: str, done: Any, *, seconds: float) -> None:
    """Send a request every 0.2 s until `done()`, for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "condition not met in time"
        ask(gateway, secret)
        time.sleep(0.2)


def test_a_failing_deployment_cools_down_is_skipped_and_then_probed_back(
    gateway, governed: Governed, fake_upstream: FakeAnthropic, clouds
):
    fake_upstream.default = AnthropicReply(status=529)
    backup, upstream_model, text = secondary("bedrock", clouds)
    route(SONNET, (governed.provider, ""), (backup, upstream_model))

    for _ in range(3):  # GATEWAY_COOLDOWN_FAILURES in a row: the breaker opens
        assert ask(gateway, governed.secret) == text
    wait_for(lambda: breaker_state(gateway, "fake-anthropic", SONNET) == State.COOLING)
    assert ask(gateway, governed.secret) == text

    assert len(fake_upstream.received) == 3  # nothing reached it while it cooled down
    rows = ledger_rows(4)
    assert [(row.provider, row.attempts) for row in rows] == [("bedrock-east", 2)] * 3 + [
        ("bedrock-east", 1)
    ]

    fake_upstream.default = AnthropicReply()  # the primary recovers
    ask_until(
        gateway,
        governed.secret,
        lambda: len(fake_upstream.received) > 3,
        seconds=COOLDOWN_SECONDS + 5,
    )
    wait_for(lambda: breaker_state(gateway, "fake-anthropic", SONNET) == State.OK)
    wait_for(lambda: UsageRecord.objects.filter(provider="fake-anthropic").exists())
    [probe] = UsageRecord.objects.filter(provider="fake-anthropic")
    assert (probe.status, probe.attempts) == (200, 1)

    bedrock_calls = len(clouds.bedrock.received)
    assert ask(gateway, governed.secret) == fake_upstream.default.text
    assert len(clouds.bedrock.received) == bedrock_calls  # the primary serves again
