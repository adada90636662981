"""One behaviour contract for both counter stores: in-process (embedded default) and Redis.

The Redis variant runs only when REDIS_URL is set; each test uses its own key prefix.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_exceptions

from proxy.counters import (
    AdmissionPlan,
    BudgetCharge,
    CounterStore,
    CounterStoreUnavailable,
    RateCharge,
    memory,
)
from proxy.counters.base import Outcome, RateKind
from proxy.counters.memory import MemoryCounterStore
from proxy.counters.redis import RedisCounterStore

REDIS_URL = os.environ.get("REDIS_URL", "")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Stores:
    store: CounterStore
    kind: str
    clock: FakeClock

    async def advance(self, seconds: float) -> None:
        """Let time pass: the stores' clock moves, and Redis keys really expire."""
        self.clock.now += seconds
        if self.kind == "redis":
            await asyncio.sleep(seconds)

    def pass_reservation_ttl(self, seconds: float) -> None:
        """Reservations and slots expire by the store's clock in both stores: no sleep."""
        self.clock.now += seconds


@pytest.fixture(
    params=[
        "memory",
        pytest.param(
            "redis",
            marks=pytest.mark.skipif(not REDIS_URL, reason="REDIS_URL is not set"),
        ),
    ]
)
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    clock = FakeClock()
    if request.param == "memory":
        yield Stores(MemoryCounterStore(lambda: 7, clock=clock), "memory", clock)
        return
    prefix = f"test:counters:{uuid.uuid4().hex}:"
    store = RedisCounterStore(REDIS_URL, prefix=prefix, version_key=prefix + "version", clock=clock)
    yield Stores(store, "redis", clock)
    await store.close()
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def budget(
    key: str, *, limit: int = 1000, reserve: int = 100, enforce: bool = True
) -> BudgetCharge:
    return BudgetCharge(
        key=key, limit_micros=limit, reserve_micros=reserve, ttl_seconds=3600, enforce=enforce
    )


def rate(
    key: str, kind: RateKind = RateKind.REQUESTS, *, limit: int = 1, amount: int = 1, ttl: int = 60
) -> RateCharge:
    return RateCharge(key=key, kind=kind, limit=limit, amount=amount, ttl_seconds=ttl)


def plan(
    *charges: BudgetCharge | RateCharge, reservation_id: str = "", ttl: int = 3600
) -> AdmissionPlan:
    return AdmissionPlan(
        budgets=tuple(c for c in charges if isinstance(c, BudgetCharge)),
        rates=tuple(c for c in charges if isinstance(c, RateCharge)),
        reservation_id=reservation_id,
        reservation_ttl_seconds=ttl,
    )


async def test_missing_budget_counters_are_reported_and_nothing_is_reserved(
    stores: Stores,
) -> None:
    store = stores.store
    await store.seed_budget("b:1:2026-11", 10, 3600)

    result = await store.admit(plan(budget("b:1:2026-11"), budget("b:2:2026-11")))

    assert result.outcome == Outcome.COUNTERS_MISSING
    assert result.missing == (1,)
    assert await store.budget_spent("b:1:2026-11") == 10


async def test_unknown_counter_has_no_spend(stores: Stores) -> None:
    assert await stores.store.budget_spent("b:404:2026-11") is None


async def test_second_seed_does_not_overwrite_the_first(stores: Stores) -> None:
    await stores.store.seed_budget("b:1:2026-11", 100, 3600)
    await stores.store.seed_budget("b:1:2026-11", 999, 3600)

    assert await stores.store.budget_spent("b:1:2026-11") == 100


async def test_budget_refused_only_when_used_plus_reserve_passes_the_limit(
    stores: Stores,
) -> None:
    store = stores.store
    await store.seed_budget("b:1:2026-11", 900, 3600)

    exactly_at_limit = await store.admit(plan(budget("b:1:2026-11", limit=1000, reserve=100)))
    one_more = await store.admit(plan(budget("b:1:2026-11", limit=1000, reserve=1)))

    assert exactly_at_limit.admitted
    assert one_more.outcome == Outcome.BUDGET_EXHAUSTED
    assert (one_more.index, one_more.current) == (0, 1000)
    assert await store.budget_spent("b:1:2026-11") == 1000


async def test_alert_only_budget_is_counted_but_never_refuses(stores: Stores) -> None:
    store = stores.store
    await store.seed_budget("b:1:2026-11", 5000, 3600)

    result = await store.admit(plan(budget("b:1:2026-11", limit=1000, enforce=False)))

    assert result.admitted
    assert await store.budget_spent("b:1:2026-11") == 5100


async def test_nothing_is_reserved_on_any_tier_when_one_budget_refuses(stores: Stores) -> None:
    store = stores.store
    await store.seed_budget("b:key:2026-11", 0, 3600)
    await store.seed_budget("b:team:2026-11", 950, 3600)
    await store.seed_budget("b:org:2026-11", 0, 3600)

    result = await store.admit(
        plan(
            budget("b:key:2026-11"),
            budget("b:team:2026-11"),
            budget("b:org:2026-11"),
            rate("r:key:1:rpm", limit=1),
        )
    )

    assert result.outcome == Outcome.BUDGET_EXHAUSTED
    assert (result.index, result.current) == (1, 950)
    assert await store.budget_spent("b:key:2026-11") == 0
    assert await store.budget_spent("b:org:2026-11") == 0
    assert (await store.admit(plan(rate("r:key:1:rpm", limit=1)))).admitted  # slot untouched


async def test_nothing_is_reserved_when_a_rate_limit_refuses(stores: Stores) -> None:
    store = stores.store
    await store.seed_budget("b:key:2026-11", 0, 3600)
    assert (await store.admit(plan(rate("r:key:1:rpm", limit=1)))).admitted

    result = await store.admit(plan(budget("b:key:2026-11"), rate("r:key:1:rpm", limit=1)))

    assert result.outcome == Outcome.RATE_LIMITED
    assert result.index == 0
    assert await store.budget_spent("b:key:2026-11") == 0


async def test_settle_replaces_the_reservation_with_the_actual_cost(stores: Stores) -> None:
    store = stores.store
    await store.seed_budget("b:1:2026-11", 40, 3600)
    admitted = plan(budget("b:1:2026-11", reserve=500))
    assert (await store.admit(admitted)).admitted
    assert await store.budget_spent("b:1:2026-11") == 540

    await store.settle(admitted, cost_micros=120, tokens=0)

    assert await store.budget_spent("b:1:2026-11") == 160


async def test_settle_does_not_recreate_a_vanished_counter(stores: Stores) -> None:
    await stores.store.settle(plan(budget("b:gone:2026-11")), cost_micros=120, tokens=0)

    assert await stores.store.budget_spent("b:gone:2026-11") is None


async def test_token_rate_is_corrected_to_the_actual_tokens(stores: Stores) -> None:
    store = stores.store
    estimated = plan(rate("r:key:1:tpm", RateKind.TOKENS, limit=100, amount=80))
    assert (await store.admit(estimated)).admitted
    assert (await store.admit(estimated)).admitted  # 80 < 100: a minute's tokens may overshoot

    await store.settle(estimated, cost_micros=0, tokens=5)  # 160 - 80 + 5

    assert (await store.admit(plan(rate("r:key:1:tpm", RateKind.TOKENS, limit=86)))).admitted
    refused = await store.admit(plan(rate("r:key:1:tpm", RateKind.TOKENS, limit=86)))
    assert refused.outcome == Outcome.RATE_LIMITED
    assert refused.current == 86


async def test_concurrency_slot_is_released_on_settle(stores: Stores) -> None:
    store = stores.store
    one_slot = plan(rate("r:key:1:conc", RateKind.CONCURRENT, limit=1, ttl=600))
    assert (await store.admit(one_slot)).admitted
    assert not (await store.admit(one_slot)).admitted

    await store.settle(one_slot, cost_micros=0, tokens=0, release=False)
    still_busy = await store.admit(one_slot)
    await store.settle(one_slot, cost_micros=0, tokens=0)

    assert still_busy.outcome == Outcome.RATE_LIMITED
    assert (await store.admit(one_slot)).admitted


async def test_requests_per_minute_window_refuses_with_retry_after(stores: Stores) -> None:
    store = stores.store
    two_per_window = plan(rate("r:key:1:rpm", limit=2, ttl=1))
    assert (await store.admit(two_per_window)).admitted
    assert (await store.admit(two_per_window)).admitted

    refused = await store.admit(two_per_window)

    assert refused.outcome == Outcome.RATE_LIMITED
    assert (refused.index, refused.current) == (0, 2)
    assert 0 < refused.retry_after_ms <= 1000
    await stores.advance(1.1)
    assert (await store.admit(two_per_window)).admitted


async def test_a_fixed_window_keeps_its_end_as_requests_arrive(stores: Stores) -> None:
    store = stores.store
    window = plan(rate("r:key:1:rpm", limit=10, ttl=1))
    assert (await store.admit(window)).admitted
    await stores.advance(0.6)
    assert (await store.admit(window)).admitted
    await stores.advance(0.6)

    fresh = await store.admit(plan(rate("r:key:1:rpm", limit=1, ttl=1)))

    assert fresh.admitted  # the first window ended 1 s after its first request


async def test_policy_version_is_read(stores: Stores) -> None:
    assert await stores.store.policy_version() == (7 if stores.kind == "memory" else 0)


async def test_redis_store_on_a_dead_port_is_unavailable() -> None:
    store = RedisCounterStore("redis://127.0.0.1:1", prefix="test:", version_key="test:version")
    charges = plan(budget("b:1:2026-11"), rate("r:key:1:rpm"))
    try:
        with pytest.raises(CounterStoreUnavailable):
            await store.admit(charges)
        with pytest.raises(CounterStoreUnavailable):
            await store.settle(charges, cost_micros=1, tokens=1)
        with pytest.raises(CounterStoreUnavailable):
            await store.seed_budget("b:1:2026-11", 0, 60)
        with pytest.raises(CounterStoreUnavailable):
            await store.budget_spent("b:1:2026-11")
        with pytest.raises(CounterStoreUnavailable):
            await store.policy_version()
    finally:
        await store.close()


# --- reservations: each one expires on its own and is released at most once ---------------


async def test_unsettled_reservation_is_reclaimed_after_its_ttl(stores: Stores) -> None:
    store = stores.store
    await store.seed_budget("b:1:2026-11", 100, 7200)
    leaked = plan(budget("b:1:2026-11", limit=1000, reserve=800), ttl=60)
    assert (await store.admit(leaked)).admitted  # its worker dies: never settled
    refused = await store.admit(plan(budget("b:1:2026-11", limit=1000, reserve=800)))
    assert refused.outcome == Outcome.BUDGET_EXHAUSTED

    stores.pass_reservation_ttl(60)

    assert await store.budget_spent("b:1:2026-11") == 100
    assert (await store.admit(plan(budget("b:1:2026-11", limit=1000, reserve=800)))).admitted


async def test_reservation_reclaimed_by_expiry_is_not_subtracted_again_on_settle(
    stores: Stores,
) -> None:
    store = stores.store
    await store.seed_budget("b:1:2026-11", 0, 7200)
    slow = plan(budget("b:1:2026-11", reserve=500), ttl=60)
    assert (await store.admit(slow)).admitted
    stores.pass_reservation_ttl(60)
    other = plan(budget("b:1:2026-11", reserve=300), ttl=60)
    assert (await store.admit(other)).admitted  # reclaims the expired 500 first

    await store.settle(slow, cost_micros=200, tokens=0)

    assert await store.budget_spent("b:1:2026-11") == 200 + 300  # other's 300 still held


async def test_settling_twice_releases_the_reservation_once(stores: Stores) -> None:
    store = stores.store
    await store.seed_budget("b:1:2026-11", 0, 3600)
    first = plan(budget("b:1:2026-11", reserve=500))
    second = plan(budget("b:1:2026-11", reserve=300))
    assert (await store.admit(first)).admitted
    assert (await store.admit(second)).admitted

    await store.settle(first, cost_micros=100, tokens=0)
    await store.settle(first, cost_micros=0, tokens=0)

    assert await store.budget_spent("b:1:2026-11") == 100 + 300


async def test_settling_a_plan_never_admitted_releases_nothing(stores: Stores) -> None:
    store = stores.store
    await store.seed_budget("b:1:2026-11", 0, 3600)
    assert (await store.admit(plan(budget("b:1:2026-11", reserve=500)))).admitted

    await store.settle(plan(budget("b:1:2026-11", reserve=500)), cost_micros=0, tokens=0)

    assert await store.budget_spent("b:1:2026-11") == 500


async def test_partial_plan_under_the_same_reservation_id_is_admitted_and_released_alone(
    stores: Stores,
) -> None:
    store = stores.store
    await store.seed_budget("b:key:2026-11", 0, 3600)
    await store.seed_budget("b:provider-a:2026-11", 0, 3600)
    await store.seed_budget("b:provider-b:2026-11", 0, 3600)
    conc = rate("r:key:1:conc", RateKind.CONCURRENT, limit=1)
    main = plan(budget("b:key:2026-11"), budget("b:provider-a:2026-11"), conc, reservation_id="q1")
    failover = plan(budget("b:provider-b:2026-11"), reservation_id="q1")
    assert (await store.admit(main)).admitted
    assert (await store.admit(failover)).admitted

    await store.settle(failover, cost_micros=0, tokens=0)  # provider b did not serve
    assert await store.budget_spent("b:provider-b:2026-11") == 0
    assert await store.budget_spent("b:key:2026-11") == 100
    assert not (await store.admit(plan(conc))).admitted  # main still holds its slot

    await store.settle(main, cost_micros=40, tokens=0)
    assert await store.budget_spent("b:key:2026-11") == 40
    assert await store.budget_spent("b:provider-a:2026-11") == 40
    assert (await store.admit(plan(conc))).admitted


async def test_same_reservation_id_on_two_counters_is_reclaimed_on_each(stores: Stores) -> None:
    store = stores.store
    await store.seed_budget("b:1:2026-11", 0, 7200)
    await store.seed_budget("b:2:2026-11", 0, 7200)
    assert (await store.admit(plan(budget("b:1:2026-11"), reservation_id="q1", ttl=60))).admitted
    assert (await store.admit(plan(budget("b:2:2026-11"), reservation_id="q1", ttl=60))).admitted

    stores.pass_reservation_ttl(60)

    assert await store.budget_spent("b:1:2026-11") == 0
    assert await store.budget_spent("b:2:2026-11") == 0


async def test_zero_reservation_is_admitted_and_settled(stores: Stores) -> None:
    """An unpriced model reserves 0; settling it used to send `-0` to HINCRBY, which refused."""
    store = stores.store
    await store.seed_budget("b:1:2026-11", 10, 3600)
    unpriced = plan(
        budget("b:1:2026-11", reserve=0),
        rate("r:key:1:tpm", RateKind.TOKENS, limit=1000, amount=40),
        rate("r:key:1:conc", RateKind.CONCURRENT, limit=1),
    )
    assert (await store.admit(unpriced)).admitted

    await store.settle(unpriced, cost_micros=0, tokens=40)
    await store.settle(unpriced, cost_micros=250, tokens=40)

    assert await store.budget_spent("b:1:2026-11") == 260
    assert (await store.admit(plan(rate("r:key:1:conc", RateKind.CONCURRENT, limit=1)))).admitted


# --- concurrency slots -----------------------------------------------------------------------


async def test_leaked_concurrency_slot_expires_while_the_key_stays_busy(stores: Stores) -> None:
    store = stores.store
    conc = rate("r:key:1:conc", RateKind.CONCURRENT, limit=2)
    assert (await store.admit(plan(conc, ttl=60))).admitted  # its worker dies: never settled
    for _ in range(8):  # 80 s of traffic, one request at a time, each with its own slot
        stores.pass_reservation_ttl(10)
        held = plan(conc, ttl=60)
        assert (await store.admit(held)).admitted
        await store.settle(held, cost_micros=0, tokens=0)

    both = [plan(conc, ttl=60), plan(conc, ttl=60)]

    assert [(await store.admit(p)).admitted for p in both] == [True, True]


async def test_concurrency_slot_is_held_until_its_own_ttl(stores: Stores) -> None:
    store = stores.store
    conc = rate("r:key:1:conc", RateKind.CONCURRENT, limit=1)
    assert (await store.admit(plan(conc, ttl=60))).admitted

    stores.pass_reservation_ttl(59)
    still_held = await store.admit(plan(conc, ttl=60))
    stores.pass_reservation_ttl(1)

    assert still_held.outcome == Outcome.RATE_LIMITED
    assert still_held.current == 1
    assert (await store.admit(plan(conc, ttl=60))).admitted


# --- the in-memory store forgets what expired ---------------------------------------------


async def test_memory_store_forgets_ended_rate_windows_and_counters() -> None:
    clock = FakeClock()
    store = MemoryCounterStore(lambda: 0, clock=clock)
    await store.seed_budget("b:1:2026-11-03", 0, 30 * 60)
    for minute in range(30):
        window = plan(
            budget("b:1:2026-11-03"),
            rate(f"r:key:1:rpm:{minute}", limit=10, ttl=60),
            rate(f"r:key:1:tpm:{minute}", RateKind.TOKENS, limit=10, ttl=60),
            rate("r:key:1:conc", RateKind.CONCURRENT, limit=10),
            ttl=90,
        )
        assert (await store.admit(window)).admitted  # none settled: slots and holds leak
        clock.now += 60
    clock.now += memory.SWEEP_SECONDS

    await store.admit(plan(rate("r:key:1:rpm:later", limit=10)))

    # Only the last minute's admission is still inside its reservation ttl.
    assert set(store._rates) == {"r:key:1:rpm:later"}
    assert store._budgets == {}
    assert store._slots == {}
    assert not store._records


async def test_memory_budget_counter_expires_with_its_ttl() -> None:
    clock = FakeClock()
    store = MemoryCounterStore(lambda: 0, clock=clock)
    await store.seed_budget("b:1:2026-11-03", 500, 60)
    await store.seed_budget("b:2:lifetime", 700, 0)

    clock.now += 60

    assert await store.budget_spent("b:1:2026-11-03") is None  # the next admission reseeds
    assert await store.budget_spent("b:2:lifetime") == 700


# --- Redis: layout and errors --------------------------------------------------------------

redis_only = pytest.mark.skipif(not REDIS_URL, reason="REDIS_URL is not set")


@redis_only
async def test_redis_budget_hash_keeps_settled_and_reserved_fields(stores_redis: Stores) -> None:
    """telemetry/reconcile.py reads the counter with HMGET s r."""
    store = stores_redis.store
    assert isinstance(store, RedisCounterStore)
    await store.seed_budget("b:1:2026-11", 40, 3600)
    assert (await store.admit(plan(budget("b:1:2026-11", reserve=500)))).admitted

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        values = await client.hmget(store._prefix + "b:1:2026-11", ["s", "r"])
    finally:
        await client.aclose()

    assert values == [b"40", b"500"]


@redis_only
async def test_redis_concurrency_count_leaked_before_the_upgrade_is_not_inherited(
    stores_redis: Stores,
) -> None:
    store = stores_redis.store
    assert isinstance(store, RedisCounterStore)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:  # the old layout: a plain count under the charge's key, leaked by dead workers
        await client.set(store._prefix + "r:key:1:conc", 3, ex=600)
    finally:
        await client.aclose()

    result = await store.admit(plan(rate("r:key:1:conc", RateKind.CONCURRENT, limit=1)))

    assert result.admitted


@redis_only
async def test_redis_script_error_is_unavailable_and_logged_once(
    stores_redis: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    store = stores_redis.store
    assert isinstance(store, RedisCounterStore)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.set(store._prefix + "b:1:2026-11", "not a hash")
    finally:
        await client.aclose()
    charges = plan(budget("b:1:2026-11"))

    for _ in range(2):
        with pytest.raises(CounterStoreUnavailable):
            await store.admit(charges)
        with pytest.raises(CounterStoreUnavailable):
            await store.budget_spent("b:1:2026-11")

    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "ResponseError" in errors[0].getMessage()
    assert "WRONGTYPE" in errors[0].getMessage()


@pytest.fixture
async def stores_redis() -> AsyncIterator[Stores]:
    clock = FakeClock()
    prefix = f"test:counters:{uuid.uuid4().hex}:"
    store = RedisCounterStore(REDIS_URL, prefix=prefix, version_key=prefix + "version", clock=clock)
    yield Stores(store, "redis", clock)
    await store.close()
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


ERRORS: list[Exception] = [
    redis_exceptions.ResponseError("ERR value is not an integer or out of range"),
    redis_exceptions.NoScriptError("NOSCRIPT No matching script"),
    redis_exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
    redis_exceptions.ReadOnlyError("You can't write against a read only replica."),
    redis_exceptions.AuthenticationError("invalid username-password pair"),
    redis_exceptions.DataError("Invalid input"),
]


async def redis_store_failing_with(
    error: Exception, monkeypatch: pytest.MonkeyPatch
) -> RedisCounterStore:
    store = RedisCounterStore(
        "redis://user:hunter2@127.0.0.1:1/0", prefix="test:", version_key="test:version"
    )

    async def fail(*args: object, **kwargs: object) -> object:
        raise error

    monkeypatch.setattr(store._redis, "execute_command", fail)
    return store


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
async def test_every_redis_error_is_unavailable_from_every_method(
    error: Exception, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = await redis_store_failing_with(error, monkeypatch)
    charges = plan(budget("b:1:2026-11"), rate("r:key:1:conc", RateKind.CONCURRENT))
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.admit(charges),
        lambda: store.settle(charges, cost_micros=1, tokens=1),
        lambda: store.seed_budget("b:1:2026-11", 0, 60),
        lambda: store.budget_spent("b:1:2026-11"),
        store.policy_version,
    ]
    try:
        for call in calls:
            with pytest.raises(CounterStoreUnavailable):
                await call()
    finally:
        await store.close()

    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # once per error type, not once per request
    assert type(error).__name__ in errors[0]
    assert "hunter2" not in caplog.text


@pytest.mark.parametrize(
    "error",
    [redis_exceptions.ConnectionError("refused"), redis_exceptions.TimeoutError("timed out")],
    ids=lambda e: type(e).__name__,
)
async def test_plain_outages_are_unavailable_without_an_error_log(
    error: Exception, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = await redis_store_failing_with(error, monkeypatch)
    try:
        with pytest.raises(CounterStoreUnavailable):
            await store.admit(plan(budget("b:1:2026-11")))
    finally:
        await store.close()

    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_crashed_worker_s_many_reservations_are_all_reclaimed(stores: Stores) -> None:
    store = stores.store
    await store.seed_budget("b:1:2026-11", 0, 7200)
    for _ in range(150):  # more than one admission reclaims at once on Redis
        assert (await store.admit(plan(budget("b:1:2026-11", limit=10**6), ttl=60))).admitted

    stores.pass_reservation_ttl(60)

    assert await store.budget_spent("b:1:2026-11") == 0


async def test_two_plans_of_one_request_on_one_counter_are_released_once(stores: Stores) -> None:
    store = stores.store
    await store.seed_budget("b:org:2026-11", 0, 3600)
    main = plan(budget("b:org:2026-11", reserve=100), reservation_id="q1")
    extra = plan(budget("b:org:2026-11", reserve=100), reservation_id="q1")
    assert (await store.admit(main)).admitted
    assert (await store.admit(extra)).admitted
    assert await store.budget_spent("b:org:2026-11") == 200

    await store.settle(extra, cost_micros=0, tokens=0)
    await store.settle(main, cost_micros=40, tokens=0)

    assert await store.budget_spent("b:org:2026-11") == 40


async def test_admission_reports_the_fullest_budget_before_this_request(stores: Stores) -> None:
    """For the utilisation headers a signed-in Claude Code reads (75 % and 95 % warnings)."""
    store = stores.store
    await store.seed_budget("b:key:2026-11", 300, 3600)  # 30 % of 1,000
    await store.seed_budget("b:team:2026-11", 6_000, 3600)  # 60 % of 10,000
    await store.seed_budget("b:alert:2026-11", 9_999, 3600)  # alert-only: never the fullest

    result = await store.admit(
        plan(
            budget("b:key:2026-11", limit=1_000, reserve=10),
            budget("b:team:2026-11", limit=10_000, reserve=10),
            budget("b:alert:2026-11", limit=10_000, reserve=10, enforce=False),
        )
    )

    assert result.admitted
    assert (result.index, result.current) == (1, 6_000)


async def test_admission_without_enforced_budgets_reports_no_fullest(stores: Stores) -> None:
    result = await stores.store.admit(plan(rate("r:key:1:rpm", limit=5)))

    assert result.admitted and result.index == -1
