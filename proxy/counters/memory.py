"""In-process counters for the embedded default (one gateway process).

Each method runs without awaiting between its check and its update, so on one event loop it
is as atomic as the Redis script, and it keeps the same semantics: budget reservations and
concurrency slots are held per reservation id until settle or until they expire.

Nothing here lives forever: rate windows, budget counters past their ttl and expired
reservations are dropped by a sweep that runs at most once every SWEEP_SECONDS, on admission.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.counters.base import (
    AdmissionPlan,
    AdmissionResult,
    BudgetCharge,
    Outcome,
    RateCharge,
    RateKind,
)

SWEEP_SECONDS = 60.0

# A held reservation: (reservation id, amount) -> expires at. Reservations are appended as
# they are admitted and, sharing one ttl, expire in that order: reclaiming pops from the front
# and stops at the first live one.
Holds = OrderedDict[tuple[str, int], float]


@dataclass(slots=True)
class _Budget:
    settled: int
    expires: float  # math.inf for counters without ttl (lifetime budgets)
    reserved: int = 0
    holds: Holds = field(default_factory=OrderedDict)

    def reclaim(self, now: float) -> None:
        """Drop reservations that expired unsettled (their worker died) from `reserved`."""
        holds = self.holds
        while holds:
            hold, expires = next(iter(holds.items()))
            if expires > now:
                return
            del holds[hold]
            self.reserved = max(0, self.reserved - hold[1])


def _expire_slots(slots: OrderedDict[str, float], now: float) -> None:
    while slots and next(iter(slots.values())) <= now:
        slots.popitem(last=False)


class MemoryCounterStore:
    def __init__(
        self,
        version_reader: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._budgets: dict[str, _Budget] = {}
        self._rates: dict[str, tuple[int, float]] = {}  # key -> (count, expires at)
        self._slots: dict[str, OrderedDict[str, float]] = {}  # key -> reservation id -> expiry
        self._version_reader = version_reader
        self._clock = clock
        self._sweep_at = clock() + SWEEP_SECONDS

    def _budget(self, key: str, now: float) -> _Budget | None:
        counter = self._budgets.get(key)
        if counter is not None and counter.expires <= now:
            del self._budgets[key]
            return None
        return counter

    def _rate(self, key: str, now: float) -> int:
        entry = self._rates.get(key)
        if entry is None:
            return 0
        if entry[1] <= now:
            del self._rates[key]
            return 0
        return entry[0]

    def _sweep(self, now: float) -> None:
        """Forget whatever expired; amortised over SWEEP_SECONDS of admissions."""
        self._sweep_at = now + SWEEP_SECONDS
        self._rates = {key: entry for key, entry in self._rates.items() if entry[1] > now}
        self._budgets = {key: c for key, c in self._budgets.items() if c.expires > now}
        for counter in self._budgets.values():
            counter.reclaim(now)
        for slots in self._slots.values():
            _expire_slots(slots, now)
        self._slots = {key: slots for key, slots in self._slots.items() if slots}

    async def admit(self, plan: AdmissionPlan) -> AdmissionResult:
        now = self._clock()
        if now >= self._sweep_at:
            self._sweep(now)
        counters = [self._budget(charge.key, now) for charge in plan.budgets]
        missing = tuple(i for i, counter in enumerate(counters) if counter is None)
        if missing:
            return AdmissionResult(Outcome.COUNTERS_MISSING, missing=missing)
        live = [counter for counter in counters if counter is not None]
        for index, (charge, counter) in enumerate(zip(plan.budgets, live, strict=True)):
            counter.reclaim(now)
            used = counter.settled + counter.reserved
            if charge.enforce and used + charge.reserve_micros > charge.limit_micros:
                return AdmissionResult(Outcome.BUDGET_EXHAUSTED, index=index, current=used)
        for index, rate in enumerate(plan.rates):
            refused = self._check_rate(index, rate, now)
            if refused is not None:
                return refused
        expires = now + plan.reservation_ttl_seconds
        for charge, counter in zip(plan.budgets, live, strict=True):
            self._hold(counter, charge, plan.reservation_id, expires)
        for rate in plan.rates:
            if rate.kind == RateKind.CONCURRENT:
                self._slots.setdefault(rate.key, OrderedDict())[plan.reservation_id] = expires
                continue
            current = self._rate(rate.key, now)
            window = self._rates.get(rate.key)
            # A fixed window keeps the end its first request gave it.
            window_end = now + rate.ttl_seconds if window is None else window[1]
            self._rates[rate.key] = (current + rate.amount, window_end)
        return AdmissionResult(Outcome.ADMITTED)

    def _check_rate(self, index: int, rate: RateCharge, now: float) -> AdmissionResult | None:
        key, kind, limit = rate.key, rate.kind, rate.limit
        if kind == RateKind.CONCURRENT:
            slots = self._slots.get(key)
            if slots is not None:
                _expire_slots(slots, now)
            current = len(slots) if slots else 0
            if current + 1 > limit:
                return AdmissionResult(Outcome.RATE_LIMITED, index=index, current=current)
            return None
        current = self._rate(key, now)
        over = current >= limit if kind == RateKind.TOKENS else current + rate.amount > limit
        if not over:
            return None
        window = self._rates.get(key)
        retry_ms = 0 if window is None else max(0, int((window[1] - now) * 1000))
        return AdmissionResult(
            Outcome.RATE_LIMITED, index=index, current=current, retry_after_ms=retry_ms
        )

    @staticmethod
    def _hold(counter: _Budget, charge: BudgetCharge, reservation_id: str, expires: float) -> None:
        hold = (reservation_id, charge.reserve_micros)
        # A zero reservation has nothing to release; the same one admitted twice is held once.
        if charge.reserve_micros and hold not in counter.holds:
            counter.holds[hold] = expires
            counter.reserved += charge.reserve_micros

    async def settle(
        self, plan: AdmissionPlan, *, cost_micros: int, tokens: int, release: bool = True
    ) -> None:
        now = self._clock()
        for charge in plan.budgets:
            counter = self._budget(charge.key, now)
            if counter is None:
                continue  # vanished: the next admission seeds it from the ledger
            counter.settled += cost_micros
            # Released only if still held: not yet settled, not reclaimed after expiry.
            if counter.holds.pop((plan.reservation_id, charge.reserve_micros), None) is not None:
                counter.reserved = max(0, counter.reserved - charge.reserve_micros)
        for rate in plan.rates:
            if rate.kind == RateKind.CONCURRENT:
                slots = self._slots.get(rate.key)
                if release and slots is not None:
                    slots.pop(plan.reservation_id, None)
                    if not slots:
                        del self._slots[rate.key]
            elif rate.kind == RateKind.TOKENS:
                self._rate(rate.key, now)  # drops an ended window
                window = self._rates.get(rate.key)
                if window is not None:
                    count = max(0, window[0] + tokens - rate.amount)
                    self._rates[rate.key] = (count, window[1])

    async def seed_budget(self, key: str, spent_micros: int, ttl_seconds: int) -> None:
        now = self._clock()
        if self._budget(key, now) is None:
            expires = now + ttl_seconds if ttl_seconds > 0 else math.inf
            self._budgets[key] = _Budget(settled=spent_micros, expires=expires)

    async def budget_spent(self, key: str) -> int | None:
        now = self._clock()
        counter = self._budget(key, now)
        if counter is None:
            return None
        counter.reclaim(now)
        return counter.settled + counter.reserved

    async def policy_version(self) -> int:
        return self._version_reader()

    async def close(self) -> None:
        return None
