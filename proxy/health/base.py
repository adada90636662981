"""What the health stores share: deployment identity, the breaker's policy and states, and the
status the admin and /metrics read.

A breaker per deployment: `failures` consecutive failed attempts, or one failure that came with
`retry-after`, open it (the deployment cools down: requests skip it). The cooldown is
`base_seconds`, doubled on each trip that follows without a success in between, at most
`max_seconds`; a `retry-after` makes it at least that long (cut to `max_seconds`, so a bogus
header cannot take a deployment out for hours). Once the cooldown ends the deployment is due a
probe: the first request to claim it is let through (a lease of PROBE_LEASE_SECONDS, so a probe
that never reports frees the slot), the others keep skipping it. A success, probe or not, closes
the breaker; a failed probe opens it again for twice as long.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple, Protocol

# The answers a request fails over on (proxy/forwarding.py RETRYABLE_STATUSES; a test keeps
# the two equal): with no answer at all, the failures the breaker counts.
FAILURE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
PROBE_LEASE_SECONDS = 60.0
# Outcomes kept per deployment for the admin (recent errors, p50 latency).
RECENT_ATTEMPTS = 50
# A deployment nothing was recorded for in this long is forgotten (its state expires).
KEEP_SECONDS = 24 * 3600


class HealthStoreUnavailable(Exception):
    """The health store could not answer (any error): callers fail open."""


def deployment_id(provider_name: str, upstream_model: str) -> str:
    """`<provider name>:<upstream model>`, as the admin shows a deployment.

    The provider's name, not its kind: two providers of one kind (two Anthropic accounts, two
    Bedrock regions) fail independently. The model too: one model of a provider can be
    overloaded or not enabled (Bedrock, Vertex) while the others answer. Provider names are
    slugs, so the first ':' splits the two again.
    """
    return f"{provider_name}:{upstream_model}"


def split_id(deployment: str) -> tuple[str, str]:
    provider, _, model = deployment.partition(":")
    return provider, model


@dataclass(frozen=True, slots=True)
class CooldownPolicy:
    failures: int = 3
    base_seconds: float = 30.0
    max_seconds: float = 300.0

    def cooldown(self, trips: int, retry_after: float | None) -> float:
        """Seconds to cool down at the `trips`-th trip in a row."""
        doubled = self.base_seconds * 2.0 ** min(max(trips - 1, 0), 30)
        return max(min(doubled, self.max_seconds), self.capped_retry_after(retry_after))

    def capped_retry_after(self, retry_after: float | None) -> float:
        if retry_after is None or not retry_after > 0:  # also refuses NaN
            return 0.0
        return min(retry_after, self.max_seconds)


class State(IntEnum):
    OK = 0  # closed: use it
    COOLING = 1  # open: skip it
    PROBE_DUE = 2  # the cooldown ended: the first request to claim it probes
    PROBING = 3  # a request holds the probe: the others skip it


class Transition(IntEnum):
    """What one recorded attempt did to the breaker."""

    NONE = 0
    TRIPPED = 1  # a cooldown started (or started again after a failed probe)
    CLOSED = 2  # a success ended a cooldown
    EXTENDED = 3  # a retry-after pushed a running cooldown further


def state_at(open_until: float | None, probe_until: float | None, now: float) -> State:
    """The state from the two markers: the cooldown's end (None: closed) and the probe lease."""
    if open_until is None:
        return State.OK
    if now < open_until:
        return State.COOLING
    if probe_until is not None and now < probe_until:
        return State.PROBING
    return State.PROBE_DUE


class Attempt(NamedTuple):
    # A named tuple, not a frozen dataclass: one is made per upstream attempt (hot path).
    at: float  # epoch seconds
    status: int  # 0: no answer (connection error, timeout)
    latency_ms: int
    ok: bool
    retry_after: float | None = None  # seconds the upstream asked to wait (not kept in Redis)


@dataclass(frozen=True, slots=True)
class DeploymentStatus:
    """One deployment's breaker and recent attempts, for the admin and /metrics."""

    deployment: str
    state: State
    open_until: float | None  # epoch seconds; None: closed
    probe_since: float | None  # when the probe running now was let through
    failures: int  # consecutive
    trips: int  # cooldowns in a row without a success
    last_error_status: int
    last_error_at: float | None
    last_ok_at: float | None
    recent: tuple[Attempt, ...]  # newest first, at most RECENT_ATTEMPTS

    @property
    def provider(self) -> str:
        return split_id(self.deployment)[0]

    @property
    def model(self) -> str:
        return split_id(self.deployment)[1]

    @property
    def last_activity(self) -> float:
        return max(self.recent[0].at if self.recent else 0.0, self.open_until or 0.0)

    def recent_errors(self, since: float) -> int:
        return sum(1 for attempt in self.recent if not attempt.ok and attempt.at >= since)

    def p50_latency_ms(self, since: float) -> int | None:
        """Median time to an answer of the recent successful attempts."""
        latencies = [a.latency_ms for a in self.recent if a.ok and a.at >= since]
        return int(statistics.median(latencies)) if latencies else None


class HealthStore(Protocol):
    """Breaker state per deployment. Every method may raise HealthStoreUnavailable."""

    async def states(self, deployments: Sequence[str]) -> list[State]:
        """The state of each deployment, in order: one round trip at most."""

    async def claim_probe(self, deployment: str) -> bool:
        """Take the probe of a deployment due one; False if another request holds it."""

    async def record(self, deployment: str, attempt: Attempt) -> tuple[Transition, float]:
        """Count one attempt's outcome; returns what it did and the cooldown it set (seconds)."""

    async def statuses(self) -> list[DeploymentStatus]:
        """Every deployment with state, for the admin."""

    async def close(self) -> None: ...


def retry_after_seconds(headers: Sequence[tuple[bytes, bytes]], now: float) -> float | None:
    """Seconds the upstream asked to wait (`retry-after-ms`, or `retry-after` as seconds or an
    HTTP date), or None without a usable header. `now` is epoch seconds, for the date form."""
    values = {name: value for name, value in headers if name in (b"retry-after-ms", b"retry-after")}
    millis = values.get(b"retry-after-ms")
    if millis is not None and (seconds := _number(millis)) is not None:
        return seconds / 1000
    value = values.get(b"retry-after")
    if value is None:
        return None
    seconds = _number(value)
    return seconds if seconds is not None else _http_date(value, now)


def _number(value: bytes) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number > 0 else None


def _http_date(value: bytes, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value.decode("latin-1"))
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    seconds = when.timestamp() - now
    return seconds if seconds > 0 else None
