"""The breaker as the failover loop uses it: which deployments a request tries, and what each
attempt taught. Never raises and never refuses a request because of health state.

Per request:

    plan = await runtime.health.plan(order)     # one read for the whole order
    for target in plan.targets:                 # the order minus the deployments cooling down
        if not await plan.claim(target):        # False only when another request probes it
            continue
        ...send...
        plan.record(target, ok=..., status=..., headers=...)   # or plan(target, status=...)

`plan.targets` is the full order when every deployment is cooling down (a request is never
failed only because of the breaker: with nothing else to try, trying is the best bet), and
`claim` never refuses the last of `plan.targets`, so a loop that fails over on `target is
last` keeps working. When the store cannot answer (Redis down) every deployment is usable and
the store is left alone for OUTAGE_BACKOFF_SECONDS, so an outage costs requests no timeouts.

On Redis a worker reads a deployment's state at most once a second and writes outcomes in the
background, successes on a healthy deployment at most once a second (_Cache): each Redis call
costs the event loop ~80-90 us of CPU, more than the rest of the breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from django.conf import settings

from governance.policy import RouteTarget
from proxy.health.base import (
    FAILURE_STATUSES,
    Attempt,
    CooldownPolicy,
    HealthStore,
    HealthStoreUnavailable,
    State,
    Transition,
    deployment_id,
    retry_after_seconds,
)
from proxy.health.memory import MemoryHealthStore
from proxy.health.redis import RedisHealthStore, redis_prefix
from telemetry import observe

logger = logging.getLogger("gateway.health")

OUTAGE_BACKOFF_SECONDS = 5.0
MAX_PENDING_RECORDS = 1000  # background writes in flight; past it outcomes are dropped
LOG_INTERVAL = 60.0
_SKIPPED = (State.COOLING, State.PROBING)


def build(redis_url: str, *, counter_prefix: str, policy: CooldownPolicy) -> DeploymentHealth:
    """Redis-backed when REDIS_URL is set (shared by every worker and replica), else in process."""
    store: HealthStore
    if redis_url:
        store = RedisHealthStore(redis_url, prefix=redis_prefix(counter_prefix), policy=policy)
    else:
        store = MemoryHealthStore(policy)
    return DeploymentHealth(store)


def from_settings() -> DeploymentHealth:
    return build(
        settings.REDIS_URL,
        counter_prefix=settings.GATEWAY_COUNTER_PREFIX,
        policy=CooldownPolicy(
            failures=settings.GATEWAY_COOLDOWN_FAILURES,
            base_seconds=settings.GATEWAY_COOLDOWN_SECONDS,
            max_seconds=settings.GATEWAY_COOLDOWN_MAX_SECONDS,
        ),
    )


class _Cache:
    """What this worker knows of a shared (Redis) store, so most requests read nothing; in
    process, only its write rule is used.

    A deployment's state is re-read at most every READ_SECONDS: another worker's trip or
    recovery reaches this one that much later, and this worker's own transitions at once. A
    success on a deployment known to be healthy is written at most every WRITE_SECONDS (it
    would change nothing but the latency sample); one after a failure is always written, so
    failures count "in a row" as seen from each worker.
    """

    READ_SECONDS = 1.0
    WRITE_SECONDS = 1.0
    MAX_ENTRIES = 10_000

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._states: dict[str, tuple[float, State]] = {}  # id -> (fresh until, state)
        self._written: dict[str, float] = {}  # id -> last success written
        self._failed: set[str] = set()  # ids with a failure written since the last success

    def states(self, deployments: Sequence[str]) -> list[State] | None:
        now = self._monotonic()
        states = []
        for deployment in deployments:
            entry = self._states.get(deployment)
            if entry is None or entry[0] <= now:
                return None
            states.append(entry[1])
        return states

    def remember(self, deployments: Sequence[str], states: Sequence[State]) -> None:
        if len(self._states) > self.MAX_ENTRIES:
            self._states.clear()
        fresh_until = self._monotonic() + self.READ_SECONDS
        for deployment, state in zip(deployments, states, strict=True):
            self._states[deployment] = (fresh_until, state)

    def worth_writing(self, deployment: str, ok: bool) -> bool:
        now = self._monotonic()
        if not ok:
            self._failed.add(deployment)
            return True
        entry = self._states.get(deployment)
        # Not known to be open (a lone deployment is never read): a success a second will do.
        healthy = (entry is None or entry[1] == State.OK) and deployment not in self._failed
        if (
            healthy
            and now - self._written.get(deployment, -self.WRITE_SECONDS) < self.WRITE_SECONDS
        ):
            return False
        if len(self._written) > self.MAX_ENTRIES:
            self._written.clear()
        self._written[deployment] = now
        self._failed.discard(deployment)
        return True


class DeploymentHealth:
    """One per gateway runtime (event loop)."""

    def __init__(
        self,
        store: HealthStore,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._clock = clock
        self._monotonic = monotonic
        # In process, outcomes apply at once; any other store is written in the background.
        self._local = store if isinstance(store, MemoryHealthStore) else None
        self._cache = None if self._local is not None else _Cache(monotonic)
        # Which outcomes are recorded: _Cache's write rule, in process as on Redis (recording
        # every success was a visible share of each request's CPU in process too).
        self._writes = self._cache if self._cache is not None else _Cache(monotonic)
        self._down_until = -1.0
        self._logged_at = -LOG_INTERVAL
        self._pending: set[asyncio.Task[None]] = set()

    def now(self) -> float:
        return self._clock()

    async def plan(self, order: Sequence[RouteTarget]) -> AttemptPlan:
        # A lone deployment is tried whatever its state: nothing to read. Its outcomes are
        # still recorded (a success closes its breaker, the admin shows its failures).
        if len(order) < 2 or self._monotonic() < self._down_until:
            return AttemptPlan(self, order, None)
        deployments = [_id(t) for t in order]
        cache = self._cache
        states = None if cache is None else cache.states(deployments)
        if states is not None:
            return AttemptPlan(self, order, states)
        try:
            states = await self.store.states(deployments)
        except HealthStoreUnavailable:
            self._outage("reading")
            return AttemptPlan(self, order, None)
        except Exception:
            self._failure("reading")
            return AttemptPlan(self, order, None)
        if cache is not None:
            cache.remember(deployments, states)
        return AttemptPlan(self, order, states)

    async def claim(self, deployment: str) -> bool:
        if self._monotonic() < self._down_until:
            return True
        try:
            won = await self.store.claim_probe(deployment)
        except HealthStoreUnavailable:
            self._outage("claiming a probe")
            return True
        except Exception:
            self._failure("claiming a probe")
            return True
        if self._cache is not None:  # won or lost, this worker's other requests skip it
            self._cache.remember([deployment], [State.PROBING])
        return won

    def worth_recording(self, deployment: str, ok: bool) -> bool:
        """False for a success that would change nothing but the latency sample (_Cache)."""
        return self._writes.worth_writing(deployment, ok)

    def record(self, deployment: str, attempt: Attempt) -> None:
        """Count an outcome without waiting: at once in process, in the background on Redis.
        Callers ask `worth_recording` first."""
        if self._local is not None:
            try:
                transition, cooldown = self._local.record_now(deployment, attempt)
            except Exception:
                self._failure("recording")
                return
            self._recorded(deployment, attempt, transition, cooldown)
            return
        if self._monotonic() < self._down_until or len(self._pending) >= MAX_PENDING_RECORDS:
            return  # advisory state: losing an outcome is better than queueing without bound
        task = asyncio.get_running_loop().create_task(self._record(deployment, attempt))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _record(self, deployment: str, attempt: Attempt) -> None:
        try:
            transition, cooldown = await self.store.record(deployment, attempt)
        except HealthStoreUnavailable:
            self._outage("recording")
            return
        except Exception:
            self._failure("recording")
            return
        self._recorded(deployment, attempt, transition, cooldown)

    def _recorded(
        self, deployment: str, attempt: Attempt, transition: Transition, cooldown: float
    ) -> None:
        if transition is Transition.NONE:  # nearly always: nothing to tell
            return
        if transition == Transition.TRIPPED:
            observe.deployment_cooldown(deployment, cooldown)
            logger.warning(
                "deployment %s cools down for %.0f s (last status %s)",
                deployment,
                cooldown,
                attempt.status or "no answer",
            )
        elif transition == Transition.CLOSED:
            logger.info("deployment %s answers again: cooldown over", deployment)
        if self._cache is not None and transition in (Transition.TRIPPED, Transition.CLOSED):
            state = State.COOLING if transition == Transition.TRIPPED else State.OK
            self._cache.remember([deployment], [state])

    def _outage(self, doing: str) -> None:
        self._down_until = self._monotonic() + OUTAGE_BACKOFF_SECONDS
        if self._should_log():
            logger.warning("health store unavailable while %s: every deployment usable", doing)

    def _failure(self, doing: str) -> None:
        if self._should_log():
            logger.exception("health store failed while %s: every deployment usable", doing)

    def _should_log(self) -> bool:
        now = self._monotonic()
        if now - self._logged_at < LOG_INTERVAL:
            return False
        self._logged_at = now
        return True

    async def close(self) -> None:
        """Let background records finish (briefly), then close the store."""
        if self._pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*self._pending, return_exceptions=True), timeout=1.0
                )
        with contextlib.suppress(Exception):
            await self.store.close()


class AttemptPlan:
    """One request's view of its route's health (module docstring)."""

    __slots__ = ("_failed", "_health", "_started_at", "_states", "targets")

    def __init__(
        self, health: DeploymentHealth, order: Sequence[RouteTarget], states: list[State] | None
    ) -> None:
        self._health = health
        self._states: dict[str, State] = {}
        self._started_at: float | None = None  # of the attempt under way (one at a time)
        self._failed: str | None = None
        self.targets: tuple[RouteTarget, ...] = tuple(order)
        if states is None or not any(states):  # fail open, or every deployment closed
            return
        usable = tuple(t for t, s in zip(order, states, strict=True) if s not in _SKIPPED)
        if not usable:  # everything cools down: the full order, no probe to claim
            return
        self.targets = usable
        for target, state in zip(order, states, strict=True):
            deployment = _id(target)
            self._states[deployment] = state
            if state in _SKIPPED:
                observe.deployment_skipped(deployment)

    @property
    def may_skip(self) -> bool:
        """Whether claim() can say no: only some deployment of the order cools down."""
        return bool(self._states)

    async def claim(self, target: RouteTarget) -> bool:
        """Call right before sending to `target`: False means skip it (another request won
        its probe, and it is not the last candidate). True also counts as `started`."""
        if self._states.get(_id(target)) == State.PROBE_DUE:
            won = await self._health.claim(_id(target))
            if not won and target is not self.targets[-1]:
                return False
        self.started(target)
        return True

    def started(self, target: RouteTarget) -> None:
        """The attempt on `target` begins: what `claim` does when it has nothing to ask (the
        failover loop calls this instead while `may_skip` is False: no await per request)."""
        if self._failed is not None and self._failed != _id(target):
            observe.deployment_failover(self._failed)
        self._failed = None
        self._started_at = time.perf_counter()

    def record(
        self,
        target: RouteTarget,
        *,
        ok: bool,
        status: int,
        headers: Sequence[tuple[bytes, bytes]] = (),
        retry_after: float | None = None,
        latency_ms: int | None = None,
    ) -> None:
        """After the attempt's outcome is known (response headers, or no answer: status 0);
        never waits, never raises. `ok` is False for what fails over (FAILURE_STATUSES, or no
        answer). A failure's `retry_after` (seconds), or a `retry-after` / `retry-after-ms`
        in `headers`, cools the deployment down at least that long. `latency_ms` defaults to
        the time since `claim`."""
        if latency_ms is None:
            started, self._started_at = self._started_at, None
            latency_ms = 0 if started is None else int((time.perf_counter() - started) * 1000)
        self._record(target, ok, status, latency_ms, retry_after, headers=headers)

    def _record(
        self,
        target: RouteTarget,
        ok: bool,
        status: int,
        latency_ms: int,
        retry_after: float | None,
        *,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        provider, model = target.provider.name, target.upstream_model
        observe.upstream_attempt(provider, model, status=status, ok=ok)
        deployment = f"{provider}:{model}"  # _id(), inlined
        health = self._health
        self._failed = None if ok else deployment
        if not health.worth_recording(deployment, ok):
            return
        now = health.now()
        if not ok and retry_after is None and headers:
            retry_after = retry_after_seconds(headers, now)
        health.record(deployment, Attempt(now, status, latency_ms, ok, retry_after))

    def __call__(
        self, target: RouteTarget, *, status: int, latency_ms: int, retry_after: float | None
    ) -> None:
        """`record` in the shape of an attempt observer (proxy/forwarding.py): the outcome is
        a failure when there was no answer (status 0) or the status fails over."""
        ok = status != 0 and status not in FAILURE_STATUSES
        self._started_at = None
        self._record(target, ok, status, latency_ms, None if ok else retry_after)


def _id(target: RouteTarget) -> str:
    return deployment_id(target.provider.name, target.upstream_model)
