"""One behaviour contract for both counter stores: in-process (embedded default) and Redis.

The Redis variant runs only when REDIS_URL is set; each test uses its own key prefix.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from proxy.counters import (
    AdmissionPlan,
    BudgetCharge,
    CounterStore,
    CounterStoreUnavailable,
    RateCharge,
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
        """Let time pass: the memory store's clock moves, Redis keys really expire."""
        if self.kind == "memory":
            self.clock.now += seconds
        else:
            await asyncio.sleep(seconds)


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
    store = RedisCounterStore(REDIS_URL, prefix=prefix, version_key=prefix + "version")
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


def plan(*charges: BudgetCharge | RateCharge) -> AdmissionPlan:
    return AdmissionPlan(
        budgets=tuple(c for c in charges if isinstance(c, BudgetCharge)),
        rates=tuple(c for c in charges if isinstance(c, RateCharge)),
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
