"""Everything a gateway worker shares between requests, created once per event loop."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache

from governance import periods, policy
from governance.policy import BudgetRule
from proxy.counters.base import CounterStore
from proxy.counters.memory import MemoryCounterStore
from proxy.counters.redis import RedisCounterStore
from proxy.providers.anthropic import AnthropicProvider
from proxy.providers.base import Provider
from proxy.providers.mock import MockProvider
from proxy.snapshots import Snapshots
from proxy.upstream import UpstreamClient
from proxy.usage import UsageBuffer
from telemetry import ledger


@dataclass(slots=True)
class AuthFailureGuard:
    """Failed authentications per client address in the minute since the first (per process).

    Over the limit, requests from that address whose key is not already known-good are
    refused before any database lookup, so guessing keys cannot hammer the database.
    """

    limit: int
    window_seconds: float = 60.0
    _windows: dict[str, tuple[float, int]] = field(default_factory=dict)  # start, failures

    def blocked(self, address: str) -> bool:
        started, count = self._windows.get(address, (0.0, 0))
        return count >= self.limit and time.time() - started < self.window_seconds

    def record_failure(self, address: str) -> None:
        now = time.time()
        started, count = self._windows.get(address, (now, 0))
        if now - started >= self.window_seconds:
            started, count = now, 0
        if len(self._windows) > 100_000:
            self._windows.clear()
        self._windows[address] = (started, count + 1)


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
        self.providers: dict[str, Provider] = {
            "anthropic": AnthropicProvider(self.upstream),
            "azure": AnthropicProvider(self.upstream),  # Foundry's Anthropic endpoint
            "mock": MockProvider(),
        }
        self.usage = UsageBuffer(
            ledger.write_events_reusing_connection,
            Path(settings.GATEWAY_SPOOL_DIR),
            replay_interval=settings.GATEWAY_SPOOL_REPLAY_SECONDS,
            release=ledger.close_connection,
        )
        self.auth_guard = AuthFailureGuard(limit=settings.GATEWAY_AUTH_FAILURES_PER_MINUTE)
        self.seed_budget = _ledger_spend

    async def close(self) -> None:
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
