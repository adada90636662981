"""Alternative providers behind a real gateway, for the end-to-end tests of issue 9, and the
harness the adapters' own tests (test_bedrock, test_vertex, test_openai_provider) share.

The project's fakes of AWS Bedrock (SigV4 verified, binary event stream), Google Vertex AI
(its own token endpoint, bearer tokens, URL shape) and an OpenAI-compatible server, started
together on 127.0.0.1; the governance rows that route to them (made through the services, as
the admin and apply_config make them); and what the tests read back (budget counters in the
gateway, ledger rows). For an adapter on its own: a hand-moved clock, a one-deployment target,
a Claude Code-like Messages call, the body or stream of an answer with the tally fed as the
gateway feeds it, and a run through the forwarding code.

Nothing here may reach a cloud: the machine's AWS and Google settings are hidden (no
credential files, no metadata servers), and every provider's base_url is a fake.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from google.auth.compute_engine import _metadata

from governance.models import Budget, Deployment, ModelPrice, ModelRoute, Provider
from governance.periods import window
from governance.policy import ProviderConfig, RouteTarget
from governance.services import common, prices, providers
from proxy import runtime as proxy_runtime
from proxy.asgi import Message
from proxy.forwarding import Outcome, forward
from proxy.health import State, deployment_id
from proxy.metering import UsageTally
from proxy.providers.base import Provider as ProviderAdapter
from proxy.providers.base import UpstreamCall
from proxy.upstream import UpstreamResponse
from telemetry.models import UsageRecord
from tests.fakes.bedrock_upstream import ACCESS_KEY, SECRET_KEY, FakeBedrock
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.vertex_upstream import FakeVertex
from tests.proxy.conftest import ACTOR, GatewayServer

ReplyT = TypeVar("ReplyT")

BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-6-v1:0"
VERTEX_MODEL = "claude-sonnet-4-6"
LLAMA = "llama-3.3-70b-versatile"
# The OpenAI-compatible model's price (USD per MTok), loaded by price_llama(): Groq's list
# price for input and output; cached input at half the input price (an assumption of the tests).
LLAMA_PRICE = {
    "model": LLAMA,
    "input": "0.59",
    "output": "0.79",
    "cache_write_5m": "0",
    "cache_write_1h": "0",
    "cache_read": "0.295",
}


@dataclass
class Clouds:
    bedrock: FakeBedrock
    vertex: FakeVertex
    openai: FakeOpenAI


def isolate_cloud_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing of the machine's AWS or Google setup, and no metadata server is ever asked."""
    isolate_aws_credentials(monkeypatch, tmp_path)
    isolate_google_credentials(monkeypatch, tmp_path)


def isolate_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS_* variable, no instance metadata, and empty config and credentials files at
    tmp_path/aws-config and tmp_path/aws-credentials (a test may write a profile there)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("aws-config", "aws-credentials"):
        (tmp_path / name).write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))


def isolate_google_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Google credentials or project from the environment, an empty gcloud config, and
    no check for a metadata server."""
    for name in (
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_CLOUD_PROJECT",
        "GCLOUD_PROJECT",
        "GOOGLE_CLOUD_QUOTA_PROJECT",
    ):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "gcloud").mkdir(exist_ok=True)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)  # read at import time


@contextlib.contextmanager
def running_clouds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Clouds]:
    isolate_cloud_credentials(monkeypatch, tmp_path)
    with FakeBedrock() as bedrock, FakeVertex() as vertex, FakeOpenAI() as openai:
        yield Clouds(bedrock, vertex, openai)


# --- governance rows ---------------------------------------------------------------------------


def _saved(provider: Provider, credentials: dict[str, str]) -> Provider:
    common.save_instance(provider, actor=ACTOR)
    providers.set_credentials(actor=ACTOR, provider=provider, credentials=credentials)
    return provider


def bedrock_provider(fake: FakeBedrock, name: str = "bedrock-east") -> Provider:
    """Static keys the fake verifies every SigV4 signature with."""
    provider = Provider(name=name, kind=Provider.Kind.BEDROCK, base_url=fake.base_url)
    provider.region = fake.region
    return _saved(provider, {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY})


def vertex_provider(fake: FakeVertex, name: str = "vertex-main") -> Provider:
    """A service account key of the fake's making (its token_uri is the fake)."""
    provider = Provider(
        name=name,
        kind=Provider.Kind.VERTEX,
        base_url=fake.base_url,
        region="us-east5",
        settings={"project_id": fake.project},
    )
    key = json.dumps(fake.service_account())
    return _saved(provider, {"service_account_json": key})


def openai_provider(fake: FakeOpenAI, name: str = "groq") -> Provider:
    provider = Provider(name=name, kind=Provider.Kind.OPENAI_COMPATIBLE, base_url=fake.base_url)
    return _saved(provider, {"api_key": fake.api_key or ""})


def anthropic_provider(base_url: str, name: str) -> Provider:
    """An Anthropic provider at any address (a fake, a port nothing listens on, ...)."""
    provider = Provider(name=name, kind=Provider.Kind.ANTHROPIC, base_url=base_url)
    return _saved(provider, {"api_key": "upstream-provider-key-for-tests-0123456789"})


def route(public_name: str, *deployments: tuple[Provider, str]) -> ModelRoute:
    """`public_name` served by each (provider, upstream model) in turn: the first is tried first."""
    model_route = ModelRoute(public_name=public_name)
    common.save_instance(model_route, actor=ACTOR)
    for position, (provider, upstream_model) in enumerate(deployments):
        deployment = Deployment(
            route=model_route, provider=provider, upstream_model=upstream_model, position=position
        )
        common.save_instance(deployment, actor=ACTOR)
    return model_route


def price_llama() -> None:
    if not ModelPrice.objects.filter(model_pattern=LLAMA).exists():
        prices.load_price_document(document={"prices": [LLAMA_PRICE]}, actor=ACTOR)


# --- what the gateway knows -------------------------------------------------------------------


def counter_of(gateway: GatewayServer, budget_id: int) -> int:
    """Settled plus reserved micro-dollars on a budget's counter in the gateway, in the period
    of the last request in the ledger (else of the clock): requests made just before midnight
    charged the period that was then current."""
    budget = Budget.objects.select_related("organization").get(pk=budget_id)
    last = UsageRecord.objects.order_by("-created_at").values_list("created_at", flat=True)
    at = last.first() or dt.datetime.now(dt.UTC)
    label = window(budget.period, budget.organization.timezone, at).label
    return gateway.call(_budget_spent(f"b:{budget_id}:{label}"))


async def _budget_spent(key: str) -> int:
    return int(await proxy_runtime.current().store.budget_spent(key) or 0)


def breaker_state(gateway: GatewayServer, provider: str, upstream_model: str) -> State:
    """The deployment's breaker as the gateway's health store has it."""
    [state] = gateway.call(
        gateway.runtime.health.store.states([deployment_id(provider, upstream_model)])
    )
    return State(state)


@contextlib.contextmanager
def silent_listener() -> Iterator[str]:
    """The base URL of a socket that takes connections and never answers: a hung upstream.

    It never accepts either: the kernel completes the handshakes (up to the backlog) and takes
    the request bytes, so the gateway waits for an answer until its read timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def closed_port_url() -> str:
    """The base URL of a port nothing listens on: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- an adapter on its own ----------------------------------------------------------------------


class Clock:
    """Monotonic seconds the test moves forward by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def route_target(config: ProviderConfig, upstream_model: str) -> RouteTarget:
    """A route's only deployment: `config` serving `upstream_model`."""
    return RouteTarget(provider=config, upstream_model=upstream_model, position=0, weight=1)


def messages_call(
    *, stream: bool = False, count: bool = False, headers: Mapping[str, str] | None = None
) -> UpstreamCall:
    """A short Messages request with a cached system prompt (or its count_tokens)."""
    parsed: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 256,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "Say hello."}],
    }
    if stream:
        parsed["stream"] = True
    return UpstreamCall(
        path="/v1/messages/count_tokens" if count else "/v1/messages",
        query="beta=true",
        body=orjson.dumps(parsed),
        parsed=parsed,
        headers={"anthropic-version": "2023-06-01", **(headers or {})},
        stream=stream,
    )


def cached_reply(reply: Callable[..., ReplyT]) -> ReplyT:
    """An Anthropic-shaped fake's reply with every kind of token, as assert_cached_usage expects."""
    return reply(
        input_tokens=31, output_tokens=17, cache_read=1200, cache_write_5m=300, cache_write_1h=80
    )


def assert_cached_usage(tally: UsageTally) -> None:
    usage = tally.usage()
    assert (usage.input_tokens, usage.output_tokens) == (31, 17)
    assert usage.cache_read_tokens == 1200
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (300, 80)


def assert_platform_body(sent: dict[str, Any], anthropic_version: str) -> None:
    """A Messages body as a cloud platform takes it (Bedrock, Vertex): the model and stream
    travel in the URL, the platform's anthropic_version in the body, cache_control is kept."""
    assert "model" not in sent and "stream" not in sent
    assert sent["anthropic_version"] == anthropic_version
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}


async def drain(response: UpstreamResponse) -> bytes:
    try:
        return b"".join([chunk async for chunk in response.chunks()])
    finally:
        await response.close()


def json_tally(body: bytes) -> UsageTally:
    tally = UsageTally()
    tally.feed_json(body)
    return tally


async def stream_of(
    provider: ProviderAdapter, config: RouteTarget, upstream_call: UpstreamCall
) -> tuple[UpstreamResponse, list[bytes], UsageTally]:
    """(response, its chunks, the tally fed chunk by chunk as the gateway feeds it)."""
    response = await provider.send(target=config, call=upstream_call)
    chunks = [chunk async for chunk in response.chunks()]
    await response.close()
    tally = UsageTally()
    for chunk in chunks:
        tally.feed_sse(chunk)
    return response, chunks, tally


class Collected:
    """What the forwarding code sent the client: the status and the whole body."""

    def __init__(self) -> None:
        self.status = 0
        self.body = b""

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        else:
            self.body += message.get("body", b"")


async def run_forward(
    providers: dict[str, ProviderAdapter], order: list[RouteTarget], upstream_call: UpstreamCall
) -> tuple[Outcome, Collected]:
    """The call through the forwarding code, trying `order` in turn, as the gateway does."""
    outcome, sent = Outcome(), Collected()
    await forward(
        providers=providers,
        order=order,
        call=upstream_call,
        send=sent,
        request_id="req-test",
        extra_headers=[],
        outcome=outcome,
    )
    return outcome, sent
