"""Admission counters: one atomic check-and-reserve over every tier that applies.

Two stores share one interface: RedisCounterStore (a Lua script; production, shared by every
gateway process) and MemoryCounterStore (one process; the embedded default).
"""

from __future__ import annotations

from proxy.counters.base import (
    AdmissionPlan,
    AdmissionResult,
    BudgetCharge,
    CounterStore,
    CounterStoreUnavailable,
    RateCharge,
)

__all__ = [
    "AdmissionPlan",
    "AdmissionResult",
    "BudgetCharge",
    "CounterStore",
    "CounterStoreUnavailable",
    "RateCharge",
]
