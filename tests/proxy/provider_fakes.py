"""Alternative providers behind a real gateway, for the end-to-end tests of issue 9.

The project's fakes of AWS Bedrock (SigV4 verified, binary event stream), Google Vertex AI
(its own token endpoint, bearer tokens, URL shape) and an OpenAI-compatible server, started
together on 127.0.0.1; the governance rows that route to them (made through the services, as
the admin and apply_config make them); and what the tests read back (budget counters in the
gateway, ledger rows).

Nothing here may reach a cloud: the machine's AWS and Google settings are hidden (no
credential files, no metadata servers), and every provider's base_url is a fake.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.auth.compute_engine import _metadata

from governance.models import Budget, Deployment, ModelPrice, ModelRoute, Provider
from governance.periods import window
from governance.services import common, prices, providers
from proxy import runtime as proxy_runtime
from proxy.health import State, deployment_id
from tests.fakes.bedrock_upstream import ACCESS_KEY, SECRET_KEY, FakeBedrock
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.vertex_upstream import FakeVertex
from tests.proxy.conftest import ACTOR, GatewayServer

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
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("aws-config", "aws-credentials"):
        (tmp_path / name).write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
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
    with contextlib.ExitStack() as stack:
        bedrock = FakeBedrock().start()
        stack.callback(bedrock.stop)
        vertex = FakeVertex().start()
        stack.callback(vertex.stop)
        openai = FakeOpenAI().start()
        stack.callback(openai.stop)
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
    """Settled plus reserved micro-dollars on a budget's current counter in the gateway."""
    budget = Budget.objects.select_related("organization").get(pk=budget_id)
    label = window(budget.period, budget.organization.timezone, dt.datetime.now(dt.UTC)).label
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
