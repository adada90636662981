"""Breaker state in process, for the embedded default (one gateway process).

No method awaits between reading and changing a deployment's state, so on one event loop each
is as atomic as the Redis scripts (proxy/health/redis.py), with the same semantics.

The admin runs in the same process on the embedded default but not on the gateway's event
loop: it reads every live store through `live_stores()` and `MemoryHealthStore.snapshot()`,
which only copies (no await, no change), so it is safe from another thread.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from proxy.health.base import (
    KEEP_SECONDS,
    PROBE_LEASE_SECONDS,
    RECENT_ATTEMPTS,
    Attempt,
    CooldownPolicy,
    DeploymentStatus,
    State,
    Transition,
    state_at,
)

# Deployments kept at most (a `*` route serves whatever model names clients send); the least
# recently recorded one goes first.
MAX_DEPLOYMENTS = 10_000
# A success refreshes a deployment's place in the eviction order at most this often.
TOUCH_SECONDS = 60.0


@dataclass(slots=True)
class _Breaker:
    touched: float
    failures: int = 0
    trips: int = 0
    open_until: float | None = None
    probe_until: float | None = None
    probe_since: float | None = None
    last_error_status: int = 0
    last_error_at: float | None = None
    last_ok_at: float | None = None
    recent: deque[Attempt] = field(default_factory=lambda: deque(maxlen=RECENT_ATTEMPTS))


_live: weakref.WeakSet[MemoryHealthStore] = weakref.WeakSet()


def live_stores() -> list[MemoryHealthStore]:
    """The in-process stores of this process (one per gateway runtime)."""
    return list(_live)


class MemoryHealthStore:
    def __init__(
        self,
        policy: CooldownPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
        probe_lease_seconds: float = PROBE_LEASE_SECONDS,
        max_deployments: int = MAX_DEPLOYMENTS,
    ) -> None:
        self.policy = policy or CooldownPolicy()
        self._clock = clock
        self._lease = probe_lease_seconds
        self._max = max_deployments
        self._breakers: OrderedDict[str, _Breaker] = OrderedDict()
        _live.add(self)

    def _live_breaker(self, deployment: str, now: float) -> _Breaker | None:
        breaker = self._breakers.get(deployment)
        if breaker is not None and now - breaker.touched > KEEP_SECONDS:
            del self._breakers[deployment]
            return None
        return breaker

    async def states(self, deployments: Sequence[str]) -> list[State]:
        now = self._clock()
        breakers = self._breakers
        states = []
        for deployment in deployments:
            breaker = breakers.get(deployment)
            if breaker is None or breaker.open_until is None:
                states.append(State.OK)  # the hot path: one dict lookup
            else:
                states.append(state_at(breaker.open_until, breaker.probe_until, now))
        return states

    async def claim_probe(self, deployment: str) -> bool:
        now = self._clock()
        breaker = self._live_breaker(deployment, now)
        state = (
            State.OK if breaker is None else state_at(breaker.open_until, breaker.probe_until, now)
        )
        if state != State.PROBE_DUE or breaker is None:
            return state == State.OK  # closed meanwhile: go; cooling again or probing: skip
        breaker.probe_until = now + self._lease
        breaker.probe_since = now
        return True

    async def record(self, deployment: str, attempt: Attempt) -> tuple[Transition, float]:
        return self.record_now(deployment, attempt)

    def record_now(self, deployment: str, attempt: Attempt) -> tuple[Transition, float]:
        """The same as `record`, callable where nothing may be awaited (an attempt observer)."""
        now = self._clock()
        breaker = self._breakers.get(deployment)
        if attempt.ok and breaker is not None and now - breaker.touched <= KEEP_SECONDS:
            # The hot path (a success): no reordering of the whole table for it on every
            # request, only when the deployment was idle for a while (the eviction order is
            # then approximate, which is all the bound on the table's size needs).
            breaker.recent.appendleft(attempt)
            if now - breaker.touched > TOUCH_SECONDS:
                self._breakers.move_to_end(deployment)
                breaker.touched = now
            if breaker.open_until is None and not breaker.failures:
                breaker.last_ok_at = now
                return Transition.NONE, 0.0
            return self._close(breaker, now), 0.0
        breaker = self._breaker_for(deployment, now)
        breaker.recent.appendleft(attempt)
        if attempt.ok:
            return self._close(breaker, now), 0.0
        return self._fail(breaker, attempt, now)

    def _breaker_for(self, deployment: str, now: float) -> _Breaker:
        breaker = self._live_breaker(deployment, now)
        if breaker is None:
            breaker = self._breakers[deployment] = _Breaker(touched=now)
            if len(self._breakers) > self._max:
                self._breakers.popitem(last=False)
        else:
            self._breakers.move_to_end(deployment)
            breaker.touched = now
        return breaker

    @staticmethod
    def _close(breaker: _Breaker, now: float) -> Transition:
        was_open = breaker.open_until is not None
        breaker.failures = breaker.trips = 0
        breaker.open_until = breaker.probe_until = breaker.probe_since = None
        breaker.last_ok_at = now
        return Transition.CLOSED if was_open else Transition.NONE

    def _fail(self, breaker: _Breaker, attempt: Attempt, now: float) -> tuple[Transition, float]:
        policy = self.policy
        retry_after = policy.capped_retry_after(attempt.retry_after)
        breaker.failures += 1
        breaker.last_error_status = attempt.status
        breaker.last_error_at = now
        if breaker.open_until is not None and now < breaker.open_until:
            # Cooling already: a request sent before the trip. Only a retry-after moves the end.
            if retry_after > 0 and now + retry_after > breaker.open_until:
                breaker.open_until = now + retry_after
                return Transition.EXTENDED, retry_after
            return Transition.NONE, 0.0
        probing = breaker.open_until is not None  # the cooldown ended: this was a probe
        if not probing and breaker.failures < policy.failures and retry_after <= 0:
            return Transition.NONE, 0.0
        breaker.trips += 1
        cooldown = policy.cooldown(breaker.trips, retry_after)
        breaker.open_until = now + cooldown
        breaker.probe_until = breaker.probe_since = None
        return Transition.TRIPPED, cooldown

    def snapshot(self) -> list[DeploymentStatus]:
        """Every deployment's status; safe from another thread (copies, never awaits)."""
        now = self._clock()
        return [
            _status(deployment, breaker, now)
            for deployment, breaker in list(self._breakers.items())
            if now - breaker.touched <= KEEP_SECONDS
        ]

    async def statuses(self) -> list[DeploymentStatus]:
        return self.snapshot()

    async def close(self) -> None:
        _live.discard(self)


def _status(deployment: str, breaker: _Breaker, now: float) -> DeploymentStatus:
    return DeploymentStatus(
        deployment=deployment,
        state=state_at(breaker.open_until, breaker.probe_until, now),
        open_until=breaker.open_until,
        probe_since=breaker.probe_since
        if breaker.probe_until is not None and now < breaker.probe_until
        else None,
        failures=breaker.failures,
        trips=breaker.trips,
        last_error_status=breaker.last_error_status,
        last_error_at=breaker.last_error_at,
        last_ok_at=breaker.last_ok_at,
        recent=tuple(breaker.recent),
    )
