"""Async access to policy snapshots for the hot path: memory first, database only on a miss.

Every process re-reads the shared policy version at most every GATEWAY_POLICY_CHECK_SECONDS
and drops its snapshots when it moved, so a warm request never reaches the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from asgiref.sync import sync_to_async

from governance import policy
from governance.policy import KeyPolicy, RoutingTable
from governance.pricing import PriceBook
from proxy.counters.base import CounterStoreUnavailable

T = TypeVar("T")
MAX_ENTRIES = 50_000


class Snapshots:
    def __init__(
        self,
        version_reader: Callable[[], Awaitable[int]],
        check_seconds: float,
        *,
        key_loader: Callable[[str], KeyPolicy | None] = policy.load_policy,
        routing_loader: Callable[[], RoutingTable] = policy.load_routing,
        price_loader: Callable[[], PriceBook] = policy.load_price_book,
    ) -> None:
        self._version_reader = version_reader
        self._check_seconds = check_seconds
        self._key_loader = policy.detached(key_loader)
        self._routing_loader = policy.detached(routing_loader)
        self._price_loader = policy.detached(price_loader)
        self._keys: dict[str, KeyPolicy | None] = {}
        self._loading: dict[str, asyncio.Future[KeyPolicy | None]] = {}
        self._routing: RoutingTable | None = None
        self._prices: PriceBook | None = None
        self._version: int | None = None
        self._checked_at = float("-inf")
        self.loads = 0  # database loads, for tests and metrics

    async def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self._check_seconds:
            return
        self._checked_at = now
        try:
            version = await self._version_reader()
        except CounterStoreUnavailable:
            return  # keep serving what is cached; the store's outage is handled at admission
        if version != self._version:
            self._version = version
            self._keys.clear()
            self._routing = None
            self._prices = None

    def cached_key(self, lookup_hash: str) -> KeyPolicy | None:
        return self._keys.get(lookup_hash)

    async def key_policy(self, lookup_hash: str) -> KeyPolicy | None:
        await self.refresh()
        if lookup_hash in self._keys:
            return self._keys[lookup_hash]
        pending = self._loading.get(lookup_hash)
        if pending is not None:  # a burst of cold requests for one key loads it once
            return await pending
        future: asyncio.Future[KeyPolicy | None] = asyncio.get_running_loop().create_future()
        self._loading[lookup_hash] = future
        try:
            self.loads += 1
            loaded = await sync_to_async(self._key_loader, thread_sensitive=False)(lookup_hash)
            if len(self._keys) >= MAX_ENTRIES:
                self._keys.clear()
            self._keys[lookup_hash] = loaded
            future.set_result(loaded)
            return loaded
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) re-raise it themselves
            raise
        finally:
            del self._loading[lookup_hash]

    async def routing(self) -> RoutingTable:
        await self.refresh()
        if self._routing is None:
            self.loads += 1
            self._routing = await sync_to_async(self._routing_loader, thread_sensitive=False)()
        return self._routing

    async def price_book(self) -> PriceBook:
        await self.refresh()
        if self._prices is None:
            self.loads += 1
            self._prices = await sync_to_async(self._price_loader, thread_sensitive=False)()
        return self._prices
