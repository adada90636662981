"""In-process counters for the embedded default (one gateway process).

Each method runs without awaiting between its check and its update, so on one event loop it
is as atomic as the Redis script, and it keeps the same semantics (proxy/counters/redis.py):
a reservation is a record of what one reservation id holds on which counter, released by
settle or, once expired, by the next admission.

Nothing here lives forever: rate windows and budget counters past their ttl are dropped by a
sweep that runs at most once every SWEEP_SECONDS, on admission.
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
    Outcome,
    RateKind,
)

SWEEP_SECONDS = 60.0


@dataclass(slots=True)
class _Budget:
    settled: int
    expires: float  # math.inf for counters without ttl (lifetime budgets)
    reserved: int = 0


@dataclass(slots=True)
class _Record:
    expires: float
    budgets: dict[str, int] = field(default_factory=dict)  # counter key -> micros held
    slots: dict[str, int] = field(default_factory=dict)  # concurrency key -> slots held


class MemoryCounterStore:
    def __init__(
        self,
        version_reader: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._budgets: dict[str, _Budget] = {}
        self._rates: dict[str, tuple[int, float]] = {}  # key -> (count, window end)
        self._slots: dict[str, int] = {}  # concurrency key -> slots taken
        # Reservation id -> what it holds. Kept in expiry order (one ttl for all, re-admission
        # moves a record to the end), so reclaiming pops from the front.
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._version_reader = version_reader
        self._clock = clock
        self._sweep_at = clock() + SWEEP_SECONDS

    def _budget(self, key: str, now: float) -> _Budget | None:
        counter = self._budgets.get(key)
        if counter is not None and counter.expires <= now:
            del self._budgets[key]
            return None
        return counter

    def _sweep(self, now: float) -> None:
        """Forget ended windows and counters; amortised over SWEEP_SECONDS of admissions."""
        self._sweep_at = now + SWEEP_SECONDS
        self._rates = {key: entry for key, entry in self._rates.items() if entry[1] > now}
        self._budgets = {key: c for key, c in self._budgets.items() if c.expires > now}

    def _reclaim(self, now: float) -> None:
        """Release what reservations that expired unsettled (their worker died) still hold."""
        records = self._records
        while records:
            reservation_id, record = next(iter(records.items()))
            if record.expires > now:
                return
            del records[reservation_id]
            self._release(record.budgets, record.slots, now)

    def _release(self, budgets: dict[str, int], slots: dict[str, int], now: float) -> None:
        for key, micros in budgets.items():
            counter = self._budget(key, now)
            if counter is not None:
                counter.reserved = max(0, counter.reserved - micros)
        for key, taken in slots.items():
            self._free_slots(key, taken)

    def _free_slots(self, key: str, taken: int) -> None:
        left = self._slots.get(key, 0) - taken
        if left > 0:
            self._slots[key] = left
        else:
            self._slots.pop(key, None)

    async def admit(self, plan: AdmissionPlan) -> AdmissionResult:
        # One pass per charge, helpers inlined and lookups reused between the check and the
        # update: this runs for every request (benchmarks/README.md, "instructions").
        now = self._clock()
        if now >= self._sweep_at:
            self._sweep(now)
        records = self._records
        if records and next(iter(records.values())).expires <= now:
            self._reclaim(now)
        budgets = self._budgets
        live: list[_Budget] = []
        missing: list[int] = []
        for index, charge in enumerate(plan.budgets):
            counter = budgets.get(charge.key)
            if counter is not None and counter.expires <= now:
                del budgets[charge.key]
                counter = None
            if counter is None:
                missing.append(index)
            else:
                live.append(counter)
        if missing:
            return AdmissionResult(Outcome.COUNTERS_MISSING, missing=tuple(missing))
        fullest, fullest_used, fullest_limit = -1, 0, 0
        for index, charge in enumerate(plan.budgets):
            used = live[index].settled + live[index].reserved
            if not charge.enforce:
                continue
            if used + charge.reserve_micros > charge.limit_micros:
                return AdmissionResult(Outcome.BUDGET_EXHAUSTED, index=index, current=used)
            if charge.limit_micros > 0 and (
                fullest < 0 or used * fullest_limit > fullest_used * charge.limit_micros
            ):
                fullest, fullest_used, fullest_limit = index, used, charge.limit_micros
        windows = self._check_rates(plan, now)
        if isinstance(windows, AdmissionResult):
            return windows
        self._reserve(plan, live, windows, now)
        return AdmissionResult(Outcome.ADMITTED, fullest, fullest_used)

    def _check_rates(
        self, plan: AdmissionPlan, now: float
    ) -> list[tuple[int, float] | None] | AdmissionResult:
        """The live window of each rate charge (None: none yet, or a concurrency charge), or
        the refusal of the first charge over its limit."""
        rates, slots = self._rates, self._slots
        windows: list[tuple[int, float] | None] = []
        for index, rate in enumerate(plan.rates):
            if rate.kind == RateKind.CONCURRENT:
                current = slots.get(rate.key, 0)
                if current + rate.amount > rate.limit:
                    return AdmissionResult(Outcome.RATE_LIMITED, index=index, current=current)
                windows.append(None)
                continue
            window = rates.get(rate.key)
            if window is not None and window[1] <= now:
                del rates[rate.key]
                window = None
            current = 0 if window is None else window[0]
            if rate.kind == RateKind.TOKENS:
                over = current >= rate.limit
            else:
                over = current + rate.amount > rate.limit
            if over:
                retry_ms = 0 if window is None else max(0, int((window[1] - now) * 1000))
                return AdmissionResult(
                    Outcome.RATE_LIMITED, index=index, current=current, retry_after_ms=retry_ms
                )
            windows.append(window)
        return windows

    def _reserve(
        self,
        plan: AdmissionPlan,
        counters: list[_Budget],
        windows: list[tuple[int, float] | None],
        now: float,
    ) -> None:
        expires = now + plan.reservation_ttl_seconds
        record = self._records.pop(plan.reservation_id, None)
        if record is None:
            record = _Record(expires)
        else:
            record.expires = expires
        held = record.budgets
        for charge, counter in zip(plan.budgets, counters, strict=True):
            if charge.reserve_micros:  # a zero reservation has nothing to release
                counter.reserved += charge.reserve_micros
                held[charge.key] = held.get(charge.key, 0) + charge.reserve_micros
        rates, slots = self._rates, self._slots
        for rate, window in zip(plan.rates, windows, strict=True):
            if rate.kind == RateKind.CONCURRENT:
                slots[rate.key] = slots.get(rate.key, 0) + rate.amount
                record.slots[rate.key] = record.slots.get(rate.key, 0) + rate.amount
            elif window is None:
                rates[rate.key] = (rate.amount, now + rate.ttl_seconds)
            else:  # a fixed window keeps the end its first request gave it
                rates[rate.key] = (window[0] + rate.amount, window[1])
        if held or record.slots:
            self._records[plan.reservation_id] = record  # at the end: the latest expiry

    async def settle(
        self, plan: AdmissionPlan, *, cost_micros: int, tokens: int, release: bool = True
    ) -> None:
        now = self._clock()
        record = self._records.get(plan.reservation_id)
        # Reservations are released only if still held: not yet settled, not reclaimed after
        # expiry (one pass per budget: this runs once per request).
        held_budgets = record.budgets if record is not None else {}
        budgets = self._budgets
        for charge in plan.budgets:
            held = held_budgets.pop(charge.key, 0)
            counter = budgets.get(charge.key)
            if counter is None:
                continue  # vanished: the next admission seeds it from the ledger
            if counter.expires <= now:
                del budgets[charge.key]
                continue
            counter.settled += cost_micros
            if held:
                counter.reserved = max(0, counter.reserved - held)
        rates = self._rates
        held_slots = record.slots if record is not None and release else {}
        for rate in plan.rates:
            if rate.kind == RateKind.TOKENS:
                window = rates.get(rate.key)
                if window is None:
                    continue
                if window[1] <= now:  # ended: dropped
                    del rates[rate.key]
                else:
                    rates[rate.key] = (max(0, window[0] + tokens - rate.amount), window[1])
            elif rate.kind == RateKind.CONCURRENT and rate.key in held_slots:
                self._free_slots(rate.key, held_slots.pop(rate.key))
        if record is not None and not record.budgets and not record.slots:
            del self._records[plan.reservation_id]

    async def seed_budget(self, key: str, spent_micros: int, ttl_seconds: int) -> None:
        now = self._clock()
        if self._budget(key, now) is None:
            expires = now + ttl_seconds if ttl_seconds > 0 else math.inf
            self._budgets[key] = _Budget(settled=spent_micros, expires=expires)

    async def budget_spent(self, key: str) -> int | None:
        now = self._clock()
        self._reclaim(now)
        counter = self._budget(key, now)
        return None if counter is None else counter.settled + counter.reserved

    async def policy_version(self) -> int:
        return self._version_reader()

    async def close(self) -> None:
        return None
