"""Everything a gateway worker shares between requests, created once per event loop."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache

from governance import periods, policy, signin_tokens
from governance.policy import BudgetRule
from proxy.asgi import InflightBytes, TrustedProxies
from proxy.counters.base import AdmissionPlan, CounterStore, CounterStoreUnavailable
from proxy.counters.memory import MemoryCounterStore
from proxy.counters.redis import RedisCounterStore
from proxy.forwarding import Limits
from proxy.health import gate as health_gate
from proxy.mcp.gateway import McpGateway
from proxy.providers.anthropic import AnthropicProvider
from proxy.providers.base import Provider
from proxy.providers.bedrock import BedrockProvider
from proxy.providers.mock import MockProvider
from proxy.providers.openai_compat import OpenAIProvider
from proxy.providers.vertex import VertexProvider
from proxy.snapshots import Snapshots
from proxy.upstream import UpstreamClient
from proxy.usage import UsageBuffer
from telemetry import ledger, spool

logger = logging.getLogger("gateway.proxy")


@dataclass(slots=True)
class AuthFailureGuard:
    """Failed authentications in the minute since the first, per client address and per key
    hash (per process).

    An address over its limit is refused before any database lookup unless its key is
    already known-good, so guessing keys cannot hammer the database. A key that keeps failing
    (a revoked key left in a script) counts against the address only the first time: repeating
    one bad key is not guessing, and behind a shared address (a NAT, or a load balancer that
    is not a trusted proxy) it must not lock everyone else out. It is throttled on its own
    once it passes the per-key limit.
    """

    limit: int
    key_limit: int = 10
    window_seconds: float = 60.0
    _addresses: dict[str, tuple[float, int]] = field(default_factory=dict)  # start, failures
    _keys: dict[str, tuple[float, int]] = field(default_factory=dict)

    def blocked(self, address: str, lookup_hash: str = "") -> bool:
        return self._count(self._addresses, address) >= self.limit or (
            bool(lookup_hash) and self._count(self._keys, lookup_hash) >= self.key_limit
        )

    def key_blocked(self, lookup_hash: str) -> bool:
        return self._count(self._keys, lookup_hash) >= self.key_limit

    def record_failure(self, address: str, lookup_hash: str = "") -> None:
        if not lookup_hash or self._count(self._keys, lookup_hash) == 0:
            self._bump(self._addresses, address)
        if lookup_hash:
            self._bump(self._keys, lookup_hash)

    def _count(self, windows: dict[str, tuple[float, int]], name: str) -> int:
        started, count = windows.get(name, (0.0, 0))
        return count if time.time() - started < self.window_seconds else 0

    def _bump(self, windows: dict[str, tuple[float, int]], name: str) -> None:
        now = time.time()
        started, count = windows.get(name, (now, 0))
        if now - started >= self.window_seconds:
            started, count = now, 0
        if len(windows) > 100_000:
            windows.clear()
        windows[name] = (started, count + 1)


class PendingReleases:
    """Reservations and concurrency slots whose settlement failed because the counter store
    was down: released as soon as it answers again, instead of holding budget room and slots
    until they expire (GATEWAY_RESERVATION_TTL_SECONDS). Bounded; what does not fit expires."""

    RETRY_SECONDS = 2.0

    def __init__(self, store: CounterStore, limit: int = 50_000) -> None:
        self._store = store
        self._plans: collections.deque[AdmissionPlan] = collections.deque(maxlen=limit)
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._plans)

    def add(self, plan: AdmissionPlan) -> None:
        self._plans.append(plan)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._retry_until_empty())

    async def _retry_until_empty(self) -> None:
        while self._plans:
            await asyncio.sleep(self.RETRY_SECONDS)
            await self.release()

    async def release(self) -> int:
        """Release what is pending, oldest first; stop at the first failure. Returns how many."""
        released = 0
        while self._plans:
            plan = self._plans[0]
            try:
                await self._store.settle(plan, cost_micros=0, tokens=0)
            except CounterStoreUnavailable:
                return released
            except Exception:
                logger.exception("releasing a reservation failed; it expires on its own")
            self._plans.popleft()
            released += 1
        return released

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.release()


def _version_from_cache() -> int:
    return policy.current_version()


async def _ledger_spend(rule: BudgetRule, window: periods.PeriodWindow) -> int:
    return await sync_to_async(ledger.spend_micros_and_close, thread_sensitive=False)(
        scope=rule.scope,
        owner_id=rule.owner_id,
        start=window.start,
        end=window.end,
        model_patterns=rule.model_patterns,
        provider_names=rule.provider_names,
    )


class Runtime:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.store: CounterStore
        if settings.REDIS_URL:
            self.store = RedisCounterStore(
                settings.REDIS_URL,
                prefix=f"{settings.GATEWAY_COUNTER_PREFIX}:",
                version_key=cache.make_key(policy.VERSION_CACHE_KEY),
            )
        else:
            self.store = MemoryCounterStore(_version_from_cache)
        self.snapshots = Snapshots(self.store.policy_version, settings.GATEWAY_POLICY_CHECK_SECONDS)
        self.upstream = UpstreamClient()
        openai = OpenAIProvider(self.upstream)
        self.providers: dict[str, Provider] = {
            "anthropic": AnthropicProvider(self.upstream),
            "azure": AnthropicProvider(self.upstream),  # Foundry's Anthropic endpoint
            "bedrock": BedrockProvider(self.upstream),
            "vertex": VertexProvider(self.upstream),
            "openai": openai,
            "openai-compatible": openai,
            "mock": MockProvider(),
        }
        self.usage = UsageBuffer(
            ledger.write_events_reusing_connection,
            Path(settings.GATEWAY_SPOOL_DIR),
            replay_interval=settings.GATEWAY_SPOOL_REPLAY_SECONDS,
            release=ledger.close_connection,
            max_pending=settings.GATEWAY_USAGE_QUEUE_MAX,
            beacon=spool.backlog_beacon(),
        )
        self.auth_guard = AuthFailureGuard(
            limit=settings.GATEWAY_AUTH_FAILURES_PER_MINUTE,
            key_limit=settings.GATEWAY_AUTH_FAILURES_PER_KEY_PER_MINUTE,
        )
        self.trusted_proxies = TrustedProxies(settings.GATEWAY_TRUSTED_PROXIES)
        self.inflight_bytes = InflightBytes(settings.GATEWAY_MAX_INFLIGHT_BODY_BYTES)
        self.requests_in_flight = 0  # proxy routes being served by this worker now
        self.seed_budget = _ledger_spend
        self.pending_releases = PendingReleases(self.store)
        self.health = health_gate.from_settings()
        # Claude Code signed in through the gateway (governance/signin_tokens.py).
        self.signin_prefix = settings.GATEWAY_SIGNIN_PATH
        self.signin_key = signin_tokens.signing_key(
            settings.GATEWAY_SIGNIN_KEY, settings.SECRET_KEY
        )
        self.failover_limits = Limits(
            attempts=settings.GATEWAY_MAX_ATTEMPTS, seconds=settings.GATEWAY_FAILOVER_SECONDS
        )
        self.mcp = McpGateway(self)  # /mcp: proxy/mcp/

    def signin_routes(self, path: str) -> bool:
        """Whether `path` is a route of a signed-in Claude Code session."""
        return path.startswith(self.signin_prefix + "/")

    async def close(self) -> None:
        await self.mcp.close()  # first: the usage events of its last tool calls are then flushed
        await self.health.close()
        await self.pending_releases.close()
        await self.usage.close()
        await self.upstream.close()
        await self.store.close()


_runtimes: dict[int, Runtime] = {}


def current() -> Runtime:
    """The runtime of the running event loop (tests run several loops in one process)."""
    loop_id = id(asyncio.get_running_loop())
    runtime = _runtimes.get(loop_id)
    if runtime is None:
        runtime = _runtimes[loop_id] = Runtime()
    return runtime


async def shutdown() -> None:
    runtime = _runtimes.pop(id(asyncio.get_running_loop()), None)
    if runtime is not None:
        await runtime.close()
