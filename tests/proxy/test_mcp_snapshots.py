"""Snapshots.mcp_catalog(): cached and invalidated exactly like the routing table."""

from __future__ import annotations

import asyncio
import threading

import pytest

from governance.policy import McpCatalog, McpServerConfig, RoutingTable
from governance.pricing import PriceBook
from proxy.snapshots import STALE_RETRY_SECONDS, Snapshots, SnapshotUnavailable
from tests.governance.snapshot_support import FakeClock
from tests.proxy.test_snapshots import Loader, key_policy, version_of


def new_catalog(number: int) -> McpCatalog:
    return McpCatalog(servers={f"s{number}": McpServerConfig(name=f"s{number}", transport="http")})


def snapshots(clock: FakeClock, catalog: Loader[McpCatalog], version: list[int]) -> Snapshots:
    return Snapshots(
        version_of(version),
        1.0,
        max_age_seconds=60.0,
        key_loader=Loader(key_policy),
        routing_loader=Loader(lambda n: RoutingTable(routes={})),
        price_loader=Loader(lambda n: PriceBook([])),
        mcp_loader=catalog,
        clock=clock,
    )


async def test_the_catalog_is_cached_until_its_max_age() -> None:
    clock, loader = FakeClock(), Loader(new_catalog)
    cache = snapshots(clock, loader, [1])

    first = await cache.mcp_catalog()
    clock.now += 59.9
    assert await cache.mcp_catalog() is first
    clock.now += 0.1
    assert await cache.mcp_catalog() is not first
    assert loader.calls == 2


async def test_a_version_change_reloads_the_catalog_within_the_check_interval() -> None:
    clock, loader, version = FakeClock(), Loader(new_catalog), [1]
    cache = snapshots(clock, loader, version)
    first = await cache.mcp_catalog()

    version[0] = 2  # e.g. a server disabled in the admin
    clock.now += 0.5
    assert await cache.mcp_catalog() is first  # the version is read once a second
    clock.now += 0.5
    assert sorted((await cache.mcp_catalog()).servers) == ["s2"]


async def test_a_stale_catalog_is_served_while_the_database_is_down() -> None:
    clock, loader, version = FakeClock(), Loader(new_catalog), [1]
    cache = snapshots(clock, loader, version)
    first = await cache.mcp_catalog()

    loader.down = True
    version[0] = 2
    clock.now += 1
    assert await cache.mcp_catalog() is first
    assert await cache.mcp_catalog() is first
    assert loader.calls == 2  # not retried on every call...

    loader.down = False
    clock.now += STALE_RETRY_SECONDS  # ...but every few seconds
    assert await cache.mcp_catalog() is not first


async def test_no_catalog_loadable_and_none_cached_is_a_503() -> None:
    loader = Loader(new_catalog)
    loader.down = True
    cache = snapshots(FakeClock(), loader, [1])

    with pytest.raises(SnapshotUnavailable) as refused:
        await cache.mcp_catalog()
    assert refused.value.status == 503


async def test_a_burst_of_cold_calls_loads_the_catalog_once() -> None:
    release = threading.Event()

    def slow(number: int) -> McpCatalog:
        release.wait(5)
        return new_catalog(number)

    loader = Loader(slow)
    cache = snapshots(FakeClock(), loader, [1])
    calls = [asyncio.create_task(cache.mcp_catalog()) for _ in range(20)]
    await asyncio.sleep(0.05)
    release.set()
    catalogs = await asyncio.gather(*calls)

    assert loader.calls == 1
    assert all(catalog is catalogs[0] for catalog in catalogs)
