"""Async access to policy snapshots for the hot path: memory first, database only on a miss.

Every process re-reads the shared policy version at most every GATEWAY_POLICY_CHECK_SECONDS
and drops its snapshots when it moved, so a warm request never reaches the database.

Every snapshot also has a maximum age (GATEWAY_SNAPSHOT_MAX_AGE_SECONDS): past it, it is
reloaded even if the version did not move. A bump can be lost for a while (Redis down when a
change commits, until the outbox job publishes it) and the version may be unreadable (Redis
down here), so the age bounds how long a revoked key can stay live. When a reload fails
(database down) the previous routing table, price book and MCP catalog stay in use, since stale
routes and prices beat refusing everything; an expired key policy never does: revocation must
win, so the request fails with SnapshotUnavailable (a 503).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from asgiref.sync import sync_to_async
from django.conf import settings

from governance import policy
from governance.policy import KeyPolicy, McpCatalog, RoutingTable
from governance.pricing import PriceBook
from proxy.errors import GatewayError

T = TypeVar("T")
MAX_ENTRIES = 50_000
# A stale routing table or price book is kept after a failed reload and retried this often.
STALE_RETRY_SECONDS = 5.0
EXPIRED = float("-inf")  # the load time of a snapshot that must be reloaded before use

logger = logging.getLogger("gateway.proxy")

# (value, monotonic time its load began, generation it was loaded in)
Loaded = tuple[Any, float, int]


class SnapshotUnavailable(GatewayError):
    """A snapshot could not be loaded and no earlier one may stand in for it."""

    def __init__(self, what: str) -> None:
        super().__init__(
            503,
            "api_error",
            f"The gateway cannot load its {what} right now (policy database unavailable). "
            "Retry shortly.",
        )


class Snapshots:
    def __init__(
        self,
        version_reader: Callable[[], Awaitable[int]],
        check_seconds: float,
        *,
        max_age_seconds: float | None = None,
        key_loader: Callable[[str], KeyPolicy | None] = policy.load_policy,
        routing_loader: Callable[[], RoutingTable] = policy.load_routing,
        price_loader: Callable[[], PriceBook] = policy.load_price_book,
        mcp_loader: Callable[[], McpCatalog] = policy.load_mcp_catalog,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._version_reader = version_reader
        self._check_seconds = check_seconds
        self._max_age: float = (
            settings.GATEWAY_SNAPSHOT_MAX_AGE_SECONDS
            if max_age_seconds is None
            else max_age_seconds
        )
        self._key_loader = policy.detached(key_loader)
        self._routing_loader = policy.detached(routing_loader)
        self._price_loader = policy.detached(price_loader)
        self._mcp_loader = policy.detached(mcp_loader)
        self._clock = clock
        self._keys: dict[str, tuple[KeyPolicy | None, float]] = {}  # hash -> (policy, loaded at)
        self._loading: dict[str, asyncio.Future[Loaded]] = {}
        self._routing: RoutingTable | None = None
        self._routing_at = EXPIRED
        self._prices: PriceBook | None = None
        self._prices_at = EXPIRED
        self._mcp: McpCatalog | None = None
        self._mcp_at = EXPIRED
        self._version: int | None = None
        # Moves with the version: a load begun before a change is not kept after it.
        self._generation = 0
        self._checked_at = float("-inf")
        self._version_failing = False
        self.loads = 0  # database loads, for tests and metrics

    async def _check_version(self, now: float) -> None:
        """Expire every snapshot if the shared version moved."""
        self._checked_at = now
        try:
            version = await self._version_reader()
        except Exception as exc:  # Redis down: keep serving, within the maximum age
            if not self._version_failing:
                logger.warning(
                    "cannot read the policy version (%s: %s); snapshots expire after %g s",
                    type(exc).__name__,
                    exc,
                    self._max_age,
                )
            self._version_failing = True
            return
        self._version_failing = False
        if version != self._version:
            self._version = version
            self._generation += 1
            self._keys.clear()
            self._loading.clear()  # later requests must not join a load begun before
            # Kept, expired, as the fallback for a reload that fails.
            self._routing_at = self._prices_at = self._mcp_at = EXPIRED

    def cached_key(self, lookup_hash: str) -> KeyPolicy | None:
        """The cached snapshot, whatever its age, without loading (None when absent)."""
        entry = self._keys.get(lookup_hash)
        return None if entry is None else entry[0]

    async def key_policy(self, lookup_hash: str) -> KeyPolicy | None:
        now = self._clock()
        if now - self._checked_at >= self._check_seconds:
            await self._check_version(now)
        entry = self._keys.get(lookup_hash)
        if entry is not None and now - entry[1] < self._max_age:
            return entry[0]
        return await self._load_key(lookup_hash)

    async def _load_key(self, lookup_hash: str) -> KeyPolicy | None:
        try:
            loaded, started, generation = await self._single_flight(
                lookup_hash, "key policy", functools.partial(self._key_loader, lookup_hash)
            )
        except Exception as exc:
            # No fallback to the expired snapshot: the key may have been revoked.
            raise SnapshotUnavailable("key policy") from exc
        key_policy = cast(KeyPolicy | None, loaded)
        if generation == self._generation:
            if len(self._keys) >= MAX_ENTRIES:
                self._keys.clear()  # bounded memory under a flood of unknown keys
            self._keys[lookup_hash] = (key_policy, started)
        return key_policy

    async def routing(self) -> RoutingTable:
        now = self._clock()
        if now - self._checked_at >= self._check_seconds:
            await self._check_version(now)
        routing = self._routing
        if routing is None or now - self._routing_at >= self._max_age:
            fresh, self._routing_at = await self._reload(
                "routing table", self._routing_loader, routing
            )
            self._routing = routing = fresh
        return routing

    async def price_book(self) -> PriceBook:
        now = self._clock()
        if now - self._checked_at >= self._check_seconds:
            await self._check_version(now)
        prices = self._prices
        if prices is None or now - self._prices_at >= self._max_age:
            book, self._prices_at = await self._reload("price book", self._price_loader, prices)
            self._prices = prices = book
        return prices

    async def mcp_catalog(self) -> McpCatalog:
        """The enabled MCP servers; like the routing table, a stale catalog beats none."""
        now = self._clock()
        if now - self._checked_at >= self._check_seconds:
            await self._check_version(now)
        catalog = self._mcp
        if catalog is None or now - self._mcp_at >= self._max_age:
            fresh, self._mcp_at = await self._reload("MCP catalog", self._mcp_loader, catalog)
            self._mcp = catalog = fresh
        return catalog

    async def _reload(
        self, what: str, load: Callable[[], T], previous: T | None
    ) -> tuple[T, float]:
        """A fresh snapshot and its load time, or the previous one if loading fails."""
        try:
            loaded, started, generation = await self._single_flight(what, what, load)
        except Exception as exc:
            if previous is None:
                raise SnapshotUnavailable(what) from exc
            return previous, self._clock() - self._max_age + STALE_RETRY_SECONDS
        # Loaded before the version moved: usable as a fallback only.
        return cast(T, loaded), started if generation == self._generation else EXPIRED

    async def _single_flight(self, name: str, what: str, load: Callable[[], object]) -> Loaded:
        """Load once for a burst of requests that all need the same snapshot."""
        pending = self._loading.get(name)
        if pending is not None:
            return await pending
        future: asyncio.Future[Loaded] = asyncio.get_running_loop().create_future()
        self._loading[name] = future
        started, generation = self._clock(), self._generation
        try:
            self.loads += 1
            value = await sync_to_async(load, thread_sensitive=False)()
            loaded = (value, started, generation)
            future.set_result(loaded)
            return loaded
        except BaseException as exc:
            if isinstance(exc, Exception):
                logger.warning("could not load the %s (%s: %s)", what, type(exc).__name__, exc)
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) re-raise it themselves
            raise
        finally:
            if self._loading.get(name) is future:  # a version change may have replaced it
                del self._loading[name]
