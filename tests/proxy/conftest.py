"""Harness for end-to-end proxy tests: the gateway as a real ASGI server (uvicorn, in a thread,
on 127.0.0.1) in front of the project's fake Anthropic upstream, driven by real clients."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import uvicorn

from governance.actors import Actor
from governance.models import (
    Deployment,
    ModelPrice,
    ModelRoute,
    Organization,
    Provider,
    Team,
    VirtualKey,
)
from governance.services import common, keys, prices, providers
from telemetry.models import UsageRecord
from tests import factories
from tests.fakes.anthropic_upstream import FakeAnthropic

UPSTREAM_KEY = "upstream-provider-key-for-tests-0123456789"
ACTOR = Actor.system("tests")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class GatewayServer:
    base_url: str
    server: uvicorn.Server
    thread: threading.Thread
    runtime: Any = None  # proxy.runtime.Runtime of the server's event loop

    @property
    def anthropic_url(self) -> str:
        return self.base_url + "/anthropic"

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the gateway's event loop (its runtime, its counter store)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.runtime.loop).result(10)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def start_gateway() -> GatewayServer:
    from gatewaysite.asgi import application
    from proxy import runtime

    before = set(runtime._runtimes)
    port = free_port()
    config = uvicorn.Config(
        application,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        access_log=False,
        # Forwarded headers are the gateway's to judge (GATEWAY_TRUSTED_PROXIES): uvicorn's own
        # default would trust 127.0.0.1 and rewrite the client address first.
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="gateway")
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.01)
    [loop_id] = set(runtime._runtimes) - before  # created at lifespan start-up
    return GatewayServer(f"http://127.0.0.1:{port}", server, thread, runtime._runtimes[loop_id])


@pytest.fixture
def fake_upstream() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture
def gateway(settings: Any, tmp_path: Any) -> Iterator[GatewayServer]:
    settings.GATEWAY_POLICY_CHECK_SECONDS = 0  # see every admin change at once
    settings.GATEWAY_SPOOL_DIR = str(tmp_path / "spool")
    server = start_gateway()
    yield server
    server.stop()


@dataclass
class Governed:
    organization: Organization
    team: Team
    key: VirtualKey
    secret: str
    provider: Provider


@pytest.fixture
def governed(fake_upstream: FakeAnthropic) -> Governed:
    """An organization with a team, a key, and every Claude model routed to the fake upstream."""
    ensure_price_book()
    org = factories.organization(name="acme", timezone="Europe/Berlin")
    team = factories.team(organization=org, name="backend")
    provider = route_claude_to(fake_upstream)
    issued = keys.create_key(actor=ACTOR, organization=org, team=team, name="vk-backend")
    return Governed(org, team, issued.key, issued.secret, provider)


def route_claude_to(fake_upstream: FakeAnthropic) -> Provider:
    """A provider for the fake upstream, serving every claude-* model under its own name."""
    provider = Provider(
        name="fake-anthropic", kind=Provider.Kind.ANTHROPIC, base_url=fake_upstream.base_url
    )
    common.save_instance(provider, actor=ACTOR)
    providers.set_credentials(actor=ACTOR, provider=provider, credentials={"api_key": UPSTREAM_KEY})
    route = ModelRoute(public_name="claude-*")
    common.save_instance(route, actor=ACTOR)
    common.save_instance(Deployment(route=route, provider=provider, upstream_model=""), actor=ACTOR)
    return provider


def ensure_price_book() -> None:
    """Transactional tests truncate every table, seeded prices included: load them again."""
    if not ModelPrice.objects.exists():
        prices.load_price_file(path=prices.DEFAULT_PRICE_FILE, actor=ACTOR)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def ledger_rows(count: int, timeout: float = 5.0) -> list[UsageRecord]:
    wait_for(lambda: UsageRecord.objects.count() >= count, timeout)
    return list(UsageRecord.objects.order_by("created_at", "id"))
