from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple, Protocol

DEFAULT_RESERVATION_TTL_SECONDS = 3600


class CounterStoreUnavailable(Exception):
    """The counter store could not answer (any error); the organization's fail mode decides."""


class BudgetCharge(NamedTuple):
    # A named tuple, not a frozen dataclass: every request builds a few, and a frozen
    # dataclass's __init__ costs several times as much.
    key: str  # "b:<budget id>:<period label>"
    limit_micros: int
    reserve_micros: int
    ttl_seconds: int  # 0 = no expiry (lifetime budgets)
    enforce: bool = True  # False for alert-only budgets: counted, never refused


class RateKind(IntEnum):
    REQUESTS = 1  # refuse when count + 1 > limit
    TOKENS = 2  # refuse when the minute's count is already at the limit
    # Refuse when count + 1 > limit. The slot is held by the plan's reservation: released on
    # settle or once the reservation expires; the charge's ttl_seconds is not used.
    CONCURRENT = 3


class RateCharge(NamedTuple):
    key: str
    kind: RateKind
    limit: int
    amount: int
    ttl_seconds: int


@dataclass(slots=True)  # not frozen: made per request, and frozen costs 3x to build
class AdmissionPlan:
    """Charges admitted together and settled together under one reservation id.

    Each budget reservation and concurrency slot is recorded under `reservation_id` and expires
    `reservation_ttl_seconds` after admission: a worker that dies before settling leaks nothing
    for longer than that (the next admission on the counter reclaims it). Settle removes only
    what is still recorded, so settling twice, or after the reservation expired, never releases
    it twice. Several plans may share one id (a request's extra provider budgets at failover):
    each settle releases what its own counters hold under that id (if two plans reserved on
    one counter, the first settle naming it releases both). Callers pass the request id; a
    plan without one gets a random id, so that plans built without it never share a hold.
    """

    budgets: tuple[BudgetCharge, ...] = ()
    rates: tuple[RateCharge, ...] = ()
    reservation_id: str = ""
    reservation_ttl_seconds: int = DEFAULT_RESERVATION_TTL_SECONDS

    def __post_init__(self) -> None:
        if not self.reservation_id:
            self.reservation_id = secrets.token_hex(16)


class Outcome(IntEnum):
    ADMITTED = 0
    BUDGET_EXHAUSTED = 1
    COUNTERS_MISSING = 2
    RATE_LIMITED = 3


@dataclass(slots=True)
class AdmissionResult:
    """What admission decided (not frozen: one is made per request, and a frozen dataclass's
    __init__ costs several times as much)."""

    outcome: Outcome
    # Refused: which budget or rate charge failed, and its spent+reserved (micros) or count.
    # Admitted: the fullest enforced budget (highest share of its limit, -1 if none) and what
    # it had spent and reserved before this request.
    index: int = -1
    current: int = 0
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
        """Add the cost to each budget and drop the plan's reservation there if still held
        (idempotent for reservations); correct token counts; free the plan's slots."""

    async def seed_budget(self, key: str, spent_micros: int, ttl_seconds: int) -> None:
        """Create a budget counter from the ledger unless another process already did."""

    async def budget_spent(self, key: str) -> int | None:
        """Settled plus reserved spend of one counter, or None if it does not exist."""

    async def policy_version(self) -> int: ...

    async def close(self) -> None: ...
