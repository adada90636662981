"""The failover breaker per deployment (proxy/health/): one behaviour contract for both stores,
in process (embedded default) and Redis; the gate the failover loop calls; the admin page and
the /metrics gauges that show it.

The Redis variants run only when REDIS_URL is set; each test uses its own key prefix. Time is
an injected clock; only the probe lease (a Redis key expiry) needs a short real wait.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from django.test import Client
from django.urls import reverse

from governance.models import Deployment, ModelRoute, Provider
from governance.policy import ProviderConfig, RouteTarget
from proxy.health import (
    FAILURE_STATUSES,
    Attempt,
    CooldownPolicy,
    State,
    Transition,
    retry_after_seconds,
)
from proxy.health.base import HealthStore
from proxy.health.gate import DeploymentHealth
from proxy.health.memory import MemoryHealthStore
from proxy.health.redis import RedisHealthStore, redis_prefix
from telemetry import metrics
from telemetry.provider_health import DeploymentHealthCollector
from tests.proxy.conftest import ACTOR

REDIS_URL = os.environ.get("REDIS_URL", "")
POLICY = CooldownPolicy(failures=3, base_seconds=30, max_seconds=300)
DEP = "primary:claude-sonnet-4-6"
with_redis = pytest.mark.skipif(not REDIS_URL, reason="REDIS_URL is not set")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Stores:
    kind: str
    clock: FakeClock
    prefix: str = ""
    made: list[HealthStore] = field(default_factory=list)

    def new(self, lease: float = 30.0) -> HealthStore:
        """Another store on the same state (for Redis: another worker)."""
        store: HealthStore
        if self.kind == "memory":
            if self.made:
                return self.made[0]
            store = MemoryHealthStore(POLICY, clock=self.clock, probe_lease_seconds=lease)
        else:
            store = RedisHealthStore(
                REDIS_URL,
                prefix=self.prefix,
                policy=POLICY,
                clock=self.clock,
                probe_lease_seconds=lease,
            )
        self.made.append(store)
        return store

    async def wait_out_lease(self, lease: float) -> None:
        """A lease ends by the store's clock in process, by Redis's own expiry in Redis."""
        self.clock.now += lease + 1
        if self.kind == "redis":
            await asyncio.sleep(lease + 0.2)


@pytest.fixture(
    params=["memory", pytest.param("redis", marks=with_redis)],
)
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    prefix = f"test:health:{uuid.uuid4().hex}:"
    made = Stores(request.param, FakeClock(), prefix)
    yield made
    for store in made.made:
        await store.close()
    if request.param == "redis":
        await _delete_prefix(prefix)


async def _delete_prefix(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def failure(clock: FakeClock, status: int = 529, retry_after: float | None = None) -> Attempt:
    return Attempt(at=clock(), status=status, latency_ms=40, ok=False, retry_after=retry_after)


def success(clock: FakeClock, latency_ms: int = 120) -> Attempt:
    return Attempt(at=clock(), status=200, latency_ms=latency_ms, ok=True)


async def fail(store: HealthStore, clock: FakeClock, times: int, **kwargs: Any) -> Transition:
    transition = Transition.NONE
    for _ in range(times):
        transition, _ = await store.record(DEP, failure(clock, **kwargs))
    return transition


async def state(store: HealthStore, deployment: str = DEP) -> State:
    [result] = await store.states([deployment])
    return result


# --- the breaker, both stores ---------------------------------------------------------------


async def test_a_deployment_cools_down_after_consecutive_failures(stores: Stores) -> None:
    store = stores.new()
    assert await fail(store, stores.clock, 2) == Transition.NONE
    assert await state(store) == State.OK
    transition, cooldown = await store.record(DEP, failure(stores.clock))
    assert (transition, cooldown) == (Transition.TRIPPED, 30)
    assert await store.states([DEP, "other:model"]) == [State.COOLING, State.OK]
    stores.clock.now += 29
    assert await state(store) == State.COOLING
    stores.clock.now += 1
    assert await state(store) == State.PROBE_DUE


async def test_a_success_resets_the_failure_count(stores: Stores) -> None:
    store = stores.new()
    await fail(store, stores.clock, 2)
    await store.record(DEP, success(stores.clock))
    assert await fail(store, stores.clock, 2) == Transition.NONE
    assert await state(store) == State.OK


async def test_retry_after_cools_down_at_once_for_at_least_that_long(stores: Stores) -> None:
    store = stores.new()
    transition, cooldown = await store.record(DEP, failure(stores.clock, 429, retry_after=120))
    assert (transition, cooldown) == (Transition.TRIPPED, 120)
    stores.clock.now += 119
    assert await state(store) == State.COOLING
    stores.clock.now += 1
    assert await state(store) == State.PROBE_DUE


async def test_a_short_retry_after_still_gets_the_base_cooldown(stores: Stores) -> None:
    store = stores.new()
    _, cooldown = await store.record(DEP, failure(stores.clock, 429, retry_after=2))
    assert cooldown == 30


async def test_retry_after_is_capped_at_the_longest_cooldown(stores: Stores) -> None:
    store = stores.new()
    _, cooldown = await store.record(DEP, failure(stores.clock, 529, retry_after=86_400))
    assert cooldown == 300


async def test_late_failures_while_cooling_down_do_not_trip_again(stores: Stores) -> None:
    """Requests sent before the trip report their failures after it: the cooldown stays."""
    store = stores.new()
    await fail(store, stores.clock, 3)
    stores.clock.now += 10
    assert await fail(store, stores.clock, 5) == Transition.NONE
    stores.clock.now += 20
    assert await state(store) == State.PROBE_DUE
    # A retry-after longer than what is left pushes the end further, without a new trip.
    await fail(store, stores.clock, 3)  # trips again: 60 s (a failed probe)
    transition, extended = await store.record(DEP, failure(stores.clock, 429, retry_after=90))
    assert (transition, extended) == (Transition.EXTENDED, 90)
    stores.clock.now += 89
    assert await state(store) == State.COOLING


async def test_only_one_request_probes_once_the_cooldown_ends(stores: Stores) -> None:
    worker_a, worker_b = stores.new(), stores.new()
    await fail(worker_a, stores.clock, 3)
    assert not await worker_a.claim_probe(DEP)  # still cooling: nothing to probe
    stores.clock.now += 30
    claims = await asyncio.gather(
        *(worker.claim_probe(DEP) for worker in [worker_a, worker_b] * 10)
    )
    assert claims.count(True) == 1
    assert await state(worker_b) == State.PROBING


async def test_a_successful_probe_closes_the_breaker(stores: Stores) -> None:
    store = stores.new()
    await fail(store, stores.clock, 3)
    stores.clock.now += 30
    assert await store.claim_probe(DEP)
    transition, _ = await store.record(DEP, success(stores.clock))
    assert transition == Transition.CLOSED
    assert await state(store) == State.OK
    # Closed for good: the count starts again from zero, the next trip is the base one.
    assert await fail(store, stores.clock, 2) == Transition.NONE
    assert (await store.record(DEP, failure(stores.clock)))[1] == 30


async def test_failed_probes_double_the_cooldown_up_to_the_longest(stores: Stores) -> None:
    store = stores.new()
    await fail(store, stores.clock, 2)
    cooldowns = []
    for _ in range(6):
        transition, cooldown = await store.record(DEP, failure(stores.clock))
        assert transition == Transition.TRIPPED
        cooldowns.append(cooldown)
        stores.clock.now += cooldown
        assert await store.claim_probe(DEP)
    assert cooldowns == [30, 60, 120, 240, 300, 300]


async def test_a_failed_probe_cools_down_again_whatever_the_failure_count(
    stores: Stores,
) -> None:
    """A retry-after opened the breaker after one failure: its probe failing is the second
    failure only, and still opens it again (for twice as long)."""
    store = stores.new()
    await store.record(DEP, failure(stores.clock, 429, retry_after=5))
    stores.clock.now += 30
    assert await store.claim_probe(DEP)
    assert await store.record(DEP, failure(stores.clock, 503)) == (Transition.TRIPPED, 60)


async def test_a_probe_that_never_reports_frees_the_slot_after_its_lease(stores: Stores) -> None:
    store = stores.new(lease=0.3)
    await fail(store, stores.clock, 3)
    stores.clock.now += 30
    assert await store.claim_probe(DEP)
    assert not await store.claim_probe(DEP)
    await stores.wait_out_lease(0.3)
    assert await state(store) == State.PROBE_DUE
    assert await store.claim_probe(DEP)


async def test_statuses_show_the_breaker_and_recent_attempts(stores: Stores) -> None:
    store = stores.new()
    for latency in (100, 300, 200):
        await store.record(DEP, success(stores.clock, latency))
    await fail(store, stores.clock, 3, status=503)
    [status] = await store.statuses()
    assert status.deployment == DEP
    assert (status.provider, status.model) == ("primary", "claude-sonnet-4-6")
    assert status.state == State.COOLING
    assert status.open_until == stores.clock.now + 30
    assert (status.failures, status.trips, status.last_error_status) == (3, 1, 503)
    assert status.last_ok_at == stores.clock.now
    assert status.recent_errors(since=stores.clock.now - 60) == 3
    assert status.p50_latency_ms(since=stores.clock.now - 60) == 200
    assert [a.ok for a in status.recent] == [False, False, False, True, True, True]


@with_redis
async def test_two_workers_share_the_breaker_through_redis() -> None:
    clock = FakeClock()
    prefix = f"test:health:{uuid.uuid4().hex}:"
    worker_a, worker_b = (
        RedisHealthStore(REDIS_URL, prefix=prefix, policy=POLICY, clock=clock) for _ in range(2)
    )
    try:
        await worker_a.record(DEP, failure(clock))
        await worker_b.record(DEP, failure(clock))
        await worker_a.record(DEP, failure(clock))  # the third in a row, over two workers
        assert await worker_b.states([DEP]) == [State.COOLING]
        clock.now += 30
        assert await worker_b.claim_probe(DEP)
        assert not await worker_a.claim_probe(DEP)
        await worker_b.record(DEP, success(clock))
        assert await worker_a.states([DEP]) == [State.OK]
    finally:
        await worker_a.close()
        await worker_b.close()
        await _delete_prefix(prefix)


# --- the gate: what the failover loop calls --------------------------------------------------


def target(provider: str, model: str = "claude-sonnet-4-6", position: int = 0) -> RouteTarget:
    config = ProviderConfig(
        name=provider, kind="anthropic", base_url="", region="", settings={}, credentials={}
    )
    return RouteTarget(provider=config, upstream_model=model, position=position, weight=1)


PRIMARY, SECONDARY = target("primary"), target("secondary", position=1)
ORDER = (PRIMARY, SECONDARY)


def memory_gate(clock: FakeClock) -> DeploymentHealth:
    return DeploymentHealth(MemoryHealthStore(POLICY, clock=clock), clock=clock)


async def cool_down(health: DeploymentHealth, deployment: RouteTarget) -> None:
    """Three requests in a row that find `deployment` failing."""
    for _ in range(3):
        plan = await health.plan([deployment])
        assert await plan.claim(deployment)
        plan.record(deployment, ok=False, status=529)


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_cooling_deployment_is_skipped_then_probed_back() -> None:
    """The route's primary fails three times: requests go to the secondary only, until the
    cooldown ends and one request probes the primary back."""
    clock = FakeClock()
    health = memory_gate(clock)
    skipped = sample(
        "gateway_deployment_skipped_total", provider="primary", model=PRIMARY.upstream_model
    )
    tried = []
    for _ in range(3):  # each request: the primary answers 529, the secondary serves
        plan = await health.plan(ORDER)
        assert plan.targets == ORDER
        for attempt in plan.targets:
            assert await plan.claim(attempt)
            tried.append(attempt.provider.name)
            ok = attempt is SECONDARY
            plan.record(attempt, ok=ok, status=200 if ok else 529)
            if ok:
                break
    assert tried == ["primary", "secondary"] * 3
    plan = await health.plan(ORDER)
    assert plan.targets == (SECONDARY,)
    assert (
        sample("gateway_deployment_skipped_total", provider="primary", model=PRIMARY.upstream_model)
        == skipped + 1
    )
    clock.now += 30
    probe, other = await health.plan(ORDER), await health.plan(ORDER)
    assert probe.targets == ORDER
    assert await probe.claim(PRIMARY)
    assert not await other.claim(PRIMARY)  # the probe is taken: this request goes on
    assert await other.claim(SECONDARY)
    probe.record(PRIMARY, ok=True, status=200)
    assert (await health.plan(ORDER)).targets == ORDER


async def test_a_route_whose_deployments_all_cool_down_still_tries_them() -> None:
    clock = FakeClock()
    health = memory_gate(clock)
    await cool_down(health, PRIMARY)
    await cool_down(health, SECONDARY)
    plan = await health.plan(ORDER)
    assert plan.targets == ORDER
    assert await plan.claim(PRIMARY)
    assert await plan.claim(SECONDARY)


async def test_the_last_candidate_is_never_refused_for_a_lost_probe() -> None:
    clock = FakeClock()
    health = memory_gate(clock)
    await cool_down(health, SECONDARY)
    await cool_down(health, PRIMARY)
    clock.now += 30  # both due a probe: the secondary's first lost, the primary's next
    assert await health.store.claim_probe(deployment(SECONDARY))
    plan = await health.plan(ORDER)
    assert plan.targets == (PRIMARY,)
    assert await health.store.claim_probe(deployment(PRIMARY))  # another request probes it
    assert await plan.claim(PRIMARY)  # the only candidate: tried anyway


def deployment(route_target: RouteTarget) -> str:
    return f"{route_target.provider.name}:{route_target.upstream_model}"


async def test_retry_after_from_the_upstream_headers_sets_the_cooldown() -> None:
    clock = FakeClock()
    health = memory_gate(clock)
    plan = await health.plan(ORDER)
    assert await plan.claim(PRIMARY)
    plan.record(PRIMARY, ok=False, status=429, headers=[(b"retry-after", b"90")])
    [status] = await health.store.statuses()
    assert status.state == State.COOLING
    assert status.open_until == clock.now + 90


async def test_the_plan_is_an_attempt_observer_for_the_failover_loop() -> None:
    """forward() tells its observer each attempt's status, latency and retry-after: a status it
    fails over on, or no answer, is a failure; any other answer a success."""
    clock = FakeClock()
    health = memory_gate(clock)
    plan = await health.plan(ORDER)
    plan(PRIMARY, status=429, latency_ms=12, retry_after=45.0)
    [status] = await health.store.statuses()
    assert (status.state, status.open_until) == (State.COOLING, clock.now + 45)
    assert status.recent[0].latency_ms == 12
    plan(SECONDARY, status=400, latency_ms=30, retry_after=None)  # the client's error: answered
    plan(SECONDARY, status=0, latency_ms=10_000, retry_after=None)  # no answer
    by_id = {s.deployment: s for s in await health.store.statuses()}
    assert [a.ok for a in by_id[deployment(SECONDARY)].recent] == [False, True]


def test_the_breaker_counts_what_the_failover_loop_fails_over_on() -> None:
    from proxy.forwarding import RETRYABLE_STATUSES

    assert FAILURE_STATUSES == RETRYABLE_STATUSES


async def test_attempts_failovers_and_cooldowns_are_counted() -> None:
    clock = FakeClock()
    health = memory_gate(clock)
    labels = {"provider": "primary", "model": PRIMARY.upstream_model}
    before = {
        name: sample(name, **labels)
        for name in ("gateway_deployment_failovers_total", "gateway_deployment_cooldowns_total")
    }
    failed_529 = sample("gateway_upstream_attempts_total", status="529", outcome="failed", **labels)
    unreachable = sample(
        "gateway_upstream_attempts_total", status="none", outcome="failed", **labels
    )
    plan = await health.plan(ORDER)
    assert await plan.claim(PRIMARY)
    plan.record(PRIMARY, ok=False, status=0)
    assert await plan.claim(SECONDARY)
    await cool_down(health, PRIMARY)
    assert sample("gateway_deployment_failovers_total", **labels) == (
        before["gateway_deployment_failovers_total"] + 1
    )
    assert sample("gateway_deployment_cooldowns_total", **labels) == (
        before["gateway_deployment_cooldowns_total"] + 1
    )
    assert sample("gateway_upstream_attempts_total", status="none", outcome="failed", **labels) == (
        unreachable + 1
    )
    assert sample("gateway_upstream_attempts_total", status="529", outcome="failed", **labels) == (
        failed_529 + 3
    )


async def test_an_unreachable_redis_leaves_every_deployment_usable() -> None:
    port = _closed_port()
    store = RedisHealthStore(
        f"redis://127.0.0.1:{port}/0", prefix="test:health:down:", policy=POLICY
    )
    health = DeploymentHealth(store)
    try:
        plan = await health.plan(ORDER)
        assert plan.targets == ORDER
        assert await plan.claim(PRIMARY)
        plan.record(PRIMARY, ok=False, status=529)
        assert await health.claim(deployment(PRIMARY))
        # The outage is remembered: the next requests do not wait on Redis at all.
        assert (await health.plan(ORDER)).targets == ORDER
    finally:
        await health.close()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@with_redis
async def test_outcomes_reach_redis_in_the_background() -> None:
    prefix = f"test:health:{uuid.uuid4().hex}:"
    clock = FakeClock()
    health = DeploymentHealth(
        RedisHealthStore(REDIS_URL, prefix=prefix, policy=POLICY, clock=clock), clock=clock
    )
    try:
        await cool_down(health, PRIMARY)
        await health.close()  # waits for the writes in flight
        reader = RedisHealthStore(REDIS_URL, prefix=prefix, policy=POLICY, clock=clock)
        assert await reader.states([deployment(PRIMARY)]) == [State.COOLING]
        await reader.close()
    finally:
        await _delete_prefix(prefix)


@pytest.fixture
async def redis_workers() -> AsyncIterator[tuple[FakeClock, FakeClock, list[DeploymentHealth]]]:
    """Two gateway workers on one Redis, with one wall clock and one monotonic clock."""
    if not REDIS_URL:
        pytest.skip("REDIS_URL is not set")
    prefix = f"test:health:{uuid.uuid4().hex}:"
    clock, monotonic = FakeClock(), FakeClock()
    workers = [
        DeploymentHealth(
            RedisHealthStore(REDIS_URL, prefix=prefix, policy=POLICY, clock=clock),
            clock=clock,
            monotonic=monotonic,
        )
        for _ in range(2)
    ]
    yield clock, monotonic, workers
    for worker in workers:
        await worker.close()
    await _delete_prefix(prefix)


async def settle(health: DeploymentHealth) -> None:
    """Wait for the outcomes sent in the background."""
    await asyncio.gather(*list(health._pending))


async def test_a_worker_sees_another_workers_trip_within_a_second(
    redis_workers: tuple[FakeClock, FakeClock, list[DeploymentHealth]],
) -> None:
    _, monotonic, (worker_a, worker_b) = redis_workers
    assert (await worker_b.plan(ORDER)).targets == ORDER  # read, and kept for a second
    await cool_down(worker_a, PRIMARY)
    await settle(worker_a)
    assert (await worker_a.plan(ORDER)).targets == (SECONDARY,)  # its own trip: at once
    assert (await worker_b.plan(ORDER)).targets == ORDER
    monotonic.now += 1
    assert (await worker_b.plan(ORDER)).targets == (SECONDARY,)


async def test_successes_on_a_healthy_deployment_are_written_once_a_second(
    redis_workers: tuple[FakeClock, FakeClock, list[DeploymentHealth]],
) -> None:
    _, monotonic, (worker, _) = redis_workers

    async def serve(ok: bool = True) -> None:
        plan = await worker.plan([PRIMARY])
        assert await plan.claim(PRIMARY)
        plan.record(PRIMARY, ok=ok, status=200 if ok else 503)
        await settle(worker)

    for _ in range(5):
        await serve()
    await serve(ok=False)
    await serve()  # after a failure: written, the count starts again
    monotonic.now += 1
    await serve()
    [status] = await worker.store.statuses()
    assert [a.ok for a in status.recent] == [True, True, False, True]
    assert status.failures == 0


# --- retry-after --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"retry-after", b"30")], 30.0),
        ([(b"retry-after", b"1.5")], 1.5),
        ([(b"retry-after-ms", b"2500"), (b"retry-after", b"9")], 2.5),
        ([(b"retry-after", b"-4")], None),
        ([(b"retry-after", b"soon")], None),
        ([(b"retry-after", b"nan")], None),
        ([], None),
    ],
)
def test_retry_after_is_read_in_seconds(
    headers: Sequence[tuple[bytes, bytes]], expected: float | None
) -> None:
    assert retry_after_seconds(headers, 1_000_000.0) == expected


def test_retry_after_as_an_http_date_counts_from_now() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 45, usegmt=True).encode()
    assert retry_after_seconds([(b"retry-after", date)], now) == 45.0
    past = email.utils.formatdate(now - 45, usegmt=True).encode()
    assert retry_after_seconds([(b"retry-after", past)], now) is None


# --- admin and /metrics -----------------------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("redis", marks=with_redis)])
def gateway_health(
    request: pytest.FixtureRequest, settings: Any
) -> Iterator[tuple[HealthStore, asyncio.AbstractEventLoop]]:
    """The health store a gateway of this process writes, as the admin finds it: in process
    (embedded default) or in Redis under the settings' prefix."""
    loop = asyncio.new_event_loop()
    store: HealthStore
    if request.param == "memory":
        settings.REDIS_URL = ""
        store = MemoryHealthStore(POLICY)
    else:
        settings.REDIS_URL = REDIS_URL
        settings.GATEWAY_COUNTER_PREFIX = f"test:health:{uuid.uuid4().hex}"
        store = RedisHealthStore(
            REDIS_URL, prefix=redis_prefix(settings.GATEWAY_COUNTER_PREFIX), policy=POLICY
        )
    yield store, loop
    loop.run_until_complete(store.close())
    if request.param == "redis":
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=settings.GATEWAY_COUNTER_PREFIX + "*"))
        if keys:
            client.delete(*keys)
        client.close()
    loop.close()


def record_outage(store: HealthStore, loop: asyncio.AbstractEventLoop, deployment: str) -> None:
    import time

    async def outage() -> None:
        await store.record(deployment, Attempt(time.time(), 200, 150, ok=True))
        for _ in range(3):
            await store.record(deployment, Attempt(time.time(), 529, 30, ok=False))

    loop.run_until_complete(outage())


@pytest.fixture
def configured_route(db: None) -> Provider:
    from governance.services import common

    provider = Provider(name="primary", kind=Provider.Kind.ANTHROPIC)
    common.save_instance(provider, actor=ACTOR)
    spare = Provider(name="spare", kind=Provider.Kind.MOCK)
    common.save_instance(spare, actor=ACTOR)
    route = ModelRoute(public_name="claude-sonnet-4-6")
    common.save_instance(route, actor=ACTOR)
    for position, (backend, model) in enumerate([(provider, "claude-sonnet-4-6"), (spare, "")]):
        common.save_instance(
            Deployment(route=route, provider=backend, upstream_model=model, position=position),
            actor=ACTOR,
        )
    return provider


def test_the_admin_shows_a_cooling_deployment(
    admin_client: Client,
    configured_route: Provider,
    gateway_health: tuple[HealthStore, asyncio.AbstractEventLoop],
) -> None:
    record_outage(*gateway_health, DEP)
    page = admin_client.get(reverse("admin:telemetry_provider_health")).content.decode()
    row = page[page.index(f'data-deployment="{DEP}"') :]
    row = row[: row.index("</tr>")]
    assert "cooling down until" in row
    assert "HTTP 529" in row
    assert "claude-sonnet-4-6" in row
    assert ">150 ms<" in row  # p50 of the recent successes
    assert 'data-deployment="spare:*"' in page  # configured, nothing recorded: ok
    providers = admin_client.get(reverse("admin:governance_provider_changelist")).content.decode()
    assert "1 cooling down" in providers
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:telemetry_provider_health") in index


def test_metrics_show_which_deployments_cool_down(
    gateway_health: tuple[HealthStore, asyncio.AbstractEventLoop], db: None
) -> None:
    record_outage(*gateway_health, DEP)
    record_success(*gateway_health, "spare:claude-haiku-4-5")
    gauges = {
        (sample.labels["provider"], sample.labels["model"], family.name): sample.value
        for family in DeploymentHealthCollector().collect()
        for sample in family.samples
    }
    assert gauges[("primary", "claude-sonnet-4-6", "gateway_deployment_cooling_down")] == 1
    assert gauges[("primary", "claude-sonnet-4-6", "gateway_deployment_consecutive_failures")] == 3
    assert gauges[("spare", "claude-haiku-4-5", "gateway_deployment_cooling_down")] == 0


def record_success(store: HealthStore, loop: asyncio.AbstractEventLoop, deployment: str) -> None:
    import time

    loop.run_until_complete(store.record(deployment, Attempt(time.time(), 200, 80, ok=True)))
