from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol


class CounterStoreUnavailable(Exception):
    """The counter store could not be reached; the organization's fail mode decides."""


@dataclass(frozen=True, slots=True)
class BudgetCharge:
    key: str  # "b:<budget id>:<period label>"
    limit_micros: int
    reserve_micros: int
    ttl_seconds: int  # 0 = no expiry (lifetime budgets)
    enforce: bool = True  # False for alert-only budgets: counted, never refused


class RateKind(IntEnum):
    REQUESTS = 1  # refuse when count + 1 > limit
    TOKENS = 2  # refuse when the minute's count is already at the limit
    CONCURRENT = 3  # refuse when count + 1 > limit; released after the response


@dataclass(frozen=True, slots=True)
class RateCharge:
    key: str
    kind: RateKind
    limit: int
    amount: int
    ttl_seconds: int


@dataclass(frozen=True, slots=True)
class AdmissionPlan:
    budgets: tuple[BudgetCharge, ...] = ()
    rates: tuple[RateCharge, ...] = ()


class Outcome(IntEnum):
    ADMITTED = 0
    BUDGET_EXHAUSTED = 1
    COUNTERS_MISSING = 2
    RATE_LIMITED = 3


@dataclass(frozen=True, slots=True)
class AdmissionResult:
    outcome: Outcome
    index: int = -1  # which budget or rate charge failed
    current: int = 0  # its spent+reserved (micros) or count
    retry_after_ms: int = 0
    missing: tuple[int, ...] = field(default=())  # budget indexes with no counter yet

    @property
    def admitted(self) -> bool:
        return self.outcome == Outcome.ADMITTED


class CounterStore(Protocol):
    async def admit(self, plan: AdmissionPlan) -> AdmissionResult:
        """Check every charge and, only if all pass, apply them all: one atomic step."""

    async def settle(
        self, plan: AdmissionPlan, *, cost_micros: int, tokens: int, release: bool = True
    ) -> None:
        """Replace each reservation by the actual cost; correct token counts; free slots."""

    async def seed_budget(self, key: str, spent_micros: int, ttl_seconds: int) -> None:
        """Create a budget counter from the ledger unless another process already did."""

    async def budget_spent(self, key: str) -> int | None:
        """Settled plus reserved spend of one counter, or None if it does not exist."""

    async def policy_version(self) -> int: ...

    async def close(self) -> None: ...
