"""Helpers for tests that drive the proxy's snapshots (proxy.snapshots.Snapshots) from sync code.

The tests write through the real services on the test thread and ask the snapshots on one
event loop kept between calls (asyncio.Runner): outside `runner.run` no loop is running on the
test thread, so the ORM may be used there; the snapshots load in worker threads like in the
gateway, which needs committed data (`django_db(transaction=True)`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from django.conf import settings
from django.core.cache import cache

from governance import policy
from governance.policy import KeyPolicy
from proxy.counters.base import CounterStoreUnavailable
from proxy.counters.memory import MemoryCounterStore
from proxy.counters.redis import RedisCounterStore
from proxy.snapshots import Snapshots

T = TypeVar("T")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def unreadable_version() -> int:
    raise CounterStoreUnavailable("the counter store is down (test)")


class Gateway:
    """One gateway process's view of the policy: its snapshots, asked on its own loop."""

    def __init__(self, runner: asyncio.Runner, snapshots: Snapshots) -> None:
        self.runner = runner
        self.snapshots = snapshots

    def run(self, awaitable: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await awaitable

        return self.runner.run(wrapped())

    def key(self, lookup_hash: str) -> KeyPolicy | None:
        return self.run(self.snapshots.key_policy(lookup_hash))


@contextmanager
def gateway(
    *,
    check_seconds: float = 0.0,
    max_age_seconds: float = 3600.0,
    clock: Callable[[], float] | None = None,
    version_reader: Callable[[], Awaitable[int]] | None = None,
) -> Iterator[Gateway]:
    """Snapshots with the real loaders and, unless given, the version reader the gateway's
    runtime uses (proxy/runtime.py): Redis when REDIS_URL is set, else the version file."""
    with asyncio.Runner() as runner:
        store: RedisCounterStore | MemoryCounterStore
        if settings.REDIS_URL:
            store = RedisCounterStore(
                settings.REDIS_URL,
                prefix="test:c:",
                version_key=cache.make_key(policy.VERSION_CACHE_KEY),
            )
        else:
            store = MemoryCounterStore(policy.current_version)
        snapshots = Snapshots(
            version_reader or store.policy_version,
            check_seconds,
            max_age_seconds=max_age_seconds,
            clock=clock or time.monotonic,
        )
        try:
            yield Gateway(runner, snapshots)
        finally:
            runner.run(store.close())
