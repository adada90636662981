"""In-process counters for the embedded default (one gateway process).

Each method runs without awaiting between its check and its update, so on one event loop it
is as atomic as the Redis script.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from proxy.counters.base import (
    AdmissionPlan,
    AdmissionResult,
    Outcome,
    RateKind,
)


class MemoryCounterStore:
    def __init__(
        self,
        version_reader: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._budgets: dict[str, list[int]] = {}  # key -> [settled, reserved]
        self._rates: dict[str, tuple[int, float]] = {}  # key -> (count, expires at)
        self._version_reader = version_reader
        self._clock = clock

    def _rate(self, key: str) -> int:
        entry = self._rates.get(key)
        if entry is None:
            return 0
        if entry[1] <= self._clock():
            del self._rates[key]
            return 0
        return entry[0]

    async def admit(self, plan: AdmissionPlan) -> AdmissionResult:
        missing = tuple(i for i, b in enumerate(plan.budgets) if b.key not in self._budgets)
        if missing:
            return AdmissionResult(Outcome.COUNTERS_MISSING, missing=missing)
        for index, charge in enumerate(plan.budgets):
            used = sum(self._budgets[charge.key])
            if charge.enforce and used + charge.reserve_micros > charge.limit_micros:
                return AdmissionResult(Outcome.BUDGET_EXHAUSTED, index=index, current=used)
        now = self._clock()
        for index, rate in enumerate(plan.rates):
            current = self._rate(rate.key)
            over = (
                current >= rate.limit
                if rate.kind == RateKind.TOKENS
                else (current + rate.amount > rate.limit)
            )
            if over:
                expires = self._rates.get(rate.key, (0, now))[1]
                retry_ms = max(0, int((expires - now) * 1000))
                return AdmissionResult(
                    Outcome.RATE_LIMITED, index=index, current=current, retry_after_ms=retry_ms
                )
        for charge in plan.budgets:
            self._budgets[charge.key][1] += charge.reserve_micros
        for rate in plan.rates:
            current = self._rate(rate.key)
            expires = now + rate.ttl_seconds
            if rate.key in self._rates and rate.kind != RateKind.CONCURRENT:
                expires = self._rates[rate.key][1]  # fixed windows keep their end
            self._rates[rate.key] = (current + rate.amount, expires)
        return AdmissionResult(Outcome.ADMITTED)

    async def settle(
        self, plan: AdmissionPlan, *, cost_micros: int, tokens: int, release: bool = True
    ) -> None:
        for charge in plan.budgets:
            counter = self._budgets.get(charge.key)
            if counter is None:
                continue
            counter[0] += cost_micros
            counter[1] = max(0, counter[1] - charge.reserve_micros)
        for rate in plan.rates:
            if rate.kind == RateKind.TOKENS:
                delta = tokens - rate.amount
            elif rate.kind == RateKind.CONCURRENT and release:
                delta = -rate.amount
            else:
                continue
            if rate.key in self._rates:
                count, expires = self._rates[rate.key]
                self._rates[rate.key] = (max(0, count + delta), expires)

    async def seed_budget(self, key: str, spent_micros: int, ttl_seconds: int) -> None:
        self._budgets.setdefault(key, [spent_micros, 0])

    async def budget_spent(self, key: str) -> int | None:
        counter = self._budgets.get(key)
        return None if counter is None else sum(counter)

    async def policy_version(self) -> int:
        return self._version_reader()

    async def close(self) -> None:
        return None
