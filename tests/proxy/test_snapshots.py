"""The proxy's snapshot cache with fake loaders: version checks, maximum age, outages."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import pytest

from governance.policy import KeyPolicy, RoutingTable
from governance.pricing import PriceBook
from proxy.snapshots import STALE_RETRY_SECONDS, Snapshots, SnapshotUnavailable
from tests.governance.snapshot_support import FakeClock, unreadable_version

T = TypeVar("T")


def key_policy(key_id: int) -> KeyPolicy:
    return KeyPolicy(
        key_id=key_id,
        key_name=f"key-{key_id}",
        prefix="sk-gw-test",
        organization_id=1,
        organization_name="org",
        timezone="UTC",
        fail_open=False,
    )


class Loader(Generic[T]):
    """Counts calls; fails while `down` is set; the n-th call returns make(n)."""

    def __init__(self, make: Callable[[int], T]) -> None:
        self.make = make
        self.calls = 0
        self.down = False

    def __call__(self, *args: object) -> T:
        self.calls += 1
        if self.down:
            raise ConnectionError("the database is down (test)")
        return self.make(self.calls)


def version_of(value: list[int]) -> Callable[[], Awaitable[int]]:
    async def read() -> int:
        return value[0]

    return read


def new_routing(number: int) -> RoutingTable:
    return RoutingTable(routes={})


def new_prices(number: int) -> PriceBook:
    return PriceBook([])


def snapshots(
    clock: FakeClock,
    *,
    keys: Loader[KeyPolicy] | Loader[None] | None = None,
    routing: Loader[RoutingTable] | None = None,
    prices: Loader[PriceBook] | None = None,
    version: list[int] | None = None,
    check_seconds: float = 1.0,
) -> Snapshots:
    return Snapshots(
        version_of(version or [1]),
        check_seconds,
        max_age_seconds=60.0,
        key_loader=keys or Loader(key_policy),
        routing_loader=routing or Loader(new_routing),
        price_loader=prices or Loader(new_prices),
        clock=clock,
    )


async def test_routing_and_prices_are_reloaded_after_the_max_age() -> None:
    clock, routing, prices = FakeClock(), Loader(new_routing), Loader(new_prices)
    cache = snapshots(clock, routing=routing, prices=prices)

    first_routing, first_prices = await cache.routing(), await cache.price_book()
    clock.now += 59.9
    assert await cache.routing() is first_routing
    assert await cache.price_book() is first_prices
    assert (routing.calls, prices.calls) == (1, 1)

    clock.now += 0.1
    assert await cache.routing() is not first_routing
    assert await cache.price_book() is not first_prices
    assert (routing.calls, prices.calls) == (2, 2)


async def test_stale_routing_and_prices_are_served_while_the_database_is_down() -> None:
    clock = FakeClock()
    routing, prices = Loader(new_routing), Loader(new_prices)
    cache = snapshots(clock, routing=routing, prices=prices)
    table, book = await cache.routing(), await cache.price_book()

    routing.down = prices.down = True
    clock.now += 60
    assert await cache.routing() is table
    assert await cache.price_book() is book
    assert await cache.routing() is table  # not retried on every request...
    assert (routing.calls, prices.calls) == (2, 2)

    clock.now += STALE_RETRY_SECONDS  # ...but every few seconds
    routing.down = prices.down = False
    assert await cache.routing() is not table
    assert await cache.price_book() is not book
    assert (routing.calls, prices.calls) == (3, 3)


async def test_routing_expired_by_a_version_change_falls_back_when_the_reload_fails() -> None:
    clock, version, routing = FakeClock(), [1], Loader(new_routing)
    cache = snapshots(clock, routing=routing, version=version)
    table = await cache.routing()

    version[0] = 2
    routing.down = True
    clock.now += 1
    assert await cache.routing() is table
    assert routing.calls == 2


async def test_expired_key_policy_is_never_served_when_its_reload_fails() -> None:
    clock, keys = FakeClock(), Loader(key_policy)
    cache = snapshots(clock, keys=keys)
    assert await cache.key_policy("h") == key_policy(1)

    keys.down = True
    clock.now += 60
    with pytest.raises(SnapshotUnavailable) as refused:
        await cache.key_policy("h")

    assert refused.value.status == 503
    assert refused.value.error_type == "api_error"
    keys.down = False
    assert await cache.key_policy("h") == key_policy(3)


async def test_nothing_loadable_and_nothing_cached_is_a_503() -> None:
    keys, routing = Loader(key_policy), Loader(new_routing)
    keys.down = routing.down = True
    cache = snapshots(FakeClock(), keys=keys, routing=routing)

    with pytest.raises(SnapshotUnavailable):
        await cache.key_policy("h")
    with pytest.raises(SnapshotUnavailable):
        await cache.routing()


async def test_unknown_keys_are_cached_as_misses() -> None:
    keys = Loader(lambda n: None)
    cache = snapshots(FakeClock(), keys=keys)

    assert await cache.key_policy("nope") is None
    assert await cache.key_policy("nope") is None
    assert keys.calls == 1


async def test_the_version_is_read_at_most_once_per_check_interval() -> None:
    clock, reads = FakeClock(), []

    async def read_version() -> int:
        reads.append(clock.now)
        return 1

    cache = Snapshots(
        read_version, 1.0, max_age_seconds=60.0, key_loader=Loader(key_policy), clock=clock
    )
    for _ in range(10):
        await cache.key_policy("h")
        clock.now += 0.25

    assert reads == [1000.0, 1001.0, 1002.0]


async def test_an_unreadable_version_keeps_serving_within_the_max_age() -> None:
    clock, keys = FakeClock(), Loader(key_policy)
    cache = Snapshots(unreadable_version, 1.0, max_age_seconds=60.0, key_loader=keys, clock=clock)

    for _ in range(59):
        assert await cache.key_policy("h") == key_policy(1)
        clock.now += 1
    assert keys.calls == 1


class GatedLoader:
    """Key loads block until released, so requests can pile up behind one."""

    def __init__(self, hold_first_only: bool = False) -> None:
        self.calls = 0
        self.gate = threading.Event()
        self.hold_first_only = hold_first_only

    def __call__(self, lookup_hash: str) -> KeyPolicy:
        self.calls += 1
        number = self.calls
        if number == 1 or not self.hold_first_only:
            assert self.gate.wait(10)
        return key_policy(number)


async def test_a_burst_of_cold_requests_loads_a_key_once() -> None:
    loader = GatedLoader()
    cache = Snapshots(
        version_of([1]), 1.0, max_age_seconds=60.0, key_loader=loader, clock=FakeClock()
    )

    burst = asyncio.gather(*(cache.key_policy("h") for _ in range(20)))
    await asyncio.sleep(0.05)
    loader.gate.set()

    assert await burst == [key_policy(1)] * 20
    assert loader.calls == 1


async def test_a_load_begun_before_a_version_change_is_not_kept() -> None:
    """A revocation seen by this process must not be undone by a load that read the key
    before it committed."""
    clock, version, loader = FakeClock(), [1], GatedLoader(hold_first_only=True)
    cache = Snapshots(
        version_of(version), 1.0, max_age_seconds=60.0, key_loader=loader, clock=clock
    )
    early = asyncio.ensure_future(cache.key_policy("h"))
    await asyncio.sleep(0.05)

    version[0] = 2
    clock.now += 1
    assert await cache.key_policy("h") == key_policy(2)  # a load of its own, not the early one
    loader.gate.set()
    assert await early == key_policy(1)

    assert await cache.key_policy("h") == key_policy(2)
    assert loader.calls == 2
