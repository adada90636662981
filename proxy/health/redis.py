"""Breaker state in Redis, shared by every gateway process and replica.

Layout under the prefix (`<GATEWAY_COUNTER_PREFIX>:health:`), per deployment id:
- `o:<id>`: the cooldown's end (epoch ms) while the breaker is open. Its presence is what makes
  a deployment skipped or probed; it expires KEEP_SECONDS after the cooldown.
- `p:<id>`: the probe lease (the probe's start, epoch ms), expiring with the lease.
- `h:<id>`: hash, f = consecutive failures, t = trips in a row, le / ls = last error's time
  and status, lo = last success's time.
- `r:<id>`: list of the latest attempts, newest first: "<at ms> <status> <latency ms> <ok>".
- `deployments`: set of the ids with state, for the admin (ids whose hash expired are pruned
  when it reads them).

The hot path reads with one MGET (`o:` and `p:` of every deployment of the route); each outcome
is one script run (sent in the background by proxy.health.gate); claiming a probe is one
script run, only when a deployment is due one. Times come from the gateway's clock like the
counters' (proxy/counters/redis.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.health.base import (
    KEEP_SECONDS,
    PROBE_LEASE_SECONDS,
    RECENT_ATTEMPTS,
    Attempt,
    CooldownPolicy,
    DeploymentStatus,
    HealthStoreUnavailable,
    State,
    Transition,
    state_at,
)

logger = logging.getLogger("gateway.health")

SET_KEY = "deployments"
# Shorter than the counters' second: a health read that waits is a request that waits, and
# failing open costs nothing but the breaker for that request.
SOCKET_TIMEOUT = 0.25

# KEYS: hash, open marker, probe lease, recent list, the deployments set.
# ARGV: now ms, ok (1/0), status, latency ms, retry-after ms (0: none, already capped),
# failures to trip, base cooldown ms, max cooldown ms, recent length, keep ms, deployment id,
# the attempt's time (ms).
RECORD_LUA = """
local now = tonumber(ARGV[1])
local keep = tonumber(ARGV[10])
local function open_for(ms)
  redis.call('SET', KEYS[2], string.format('%d', now + ms), 'PX', string.format('%d', ms + keep))
end
redis.call('LPUSH', KEYS[4], ARGV[12] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. ARGV[2])
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[9]) - 1)
redis.call('PEXPIRE', KEYS[4], keep)
redis.call('SADD', KEYS[5], ARGV[11])
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'f', 0, 't', 0, 'lo', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], keep)
  redis.call('DEL', KEYS[3])
  if redis.call('DEL', KEYS[2]) == 1 then return {2, 0} end
  return {0, 0}
end
local failures = redis.call('HINCRBY', KEYS[1], 'f', 1)
redis.call('HSET', KEYS[1], 'le', ARGV[1], 'ls', ARGV[3])
redis.call('PEXPIRE', KEYS[1], keep)
local retry = tonumber(ARGV[5])
local open_until = tonumber(redis.call('GET', KEYS[2]) or '-1')
if open_until > now then
  -- Cooling already: a request sent before the trip. Only a retry-after moves the end.
  if retry > 0 and now + retry > open_until then
    open_for(retry)
    return {3, retry}
  end
  return {0, 0}
end
-- A marker whose end has passed means this was a probe: it fails, the breaker opens again.
if open_until < 0 and failures < tonumber(ARGV[6]) and retry <= 0 then return {0, 0} end
local trips = redis.call('HINCRBY', KEYS[1], 't', 1)
local cooldown = math.min(tonumber(ARGV[7]) * 2 ^ math.min(trips - 1, 30), tonumber(ARGV[8]))
cooldown = math.floor(math.max(cooldown, retry))
open_for(cooldown)
redis.call('DEL', KEYS[3])
return {1, cooldown}
"""

# KEYS: open marker, probe lease. ARGV: now ms, lease ms. 1: go (the probe is this request's,
# or the breaker closed meanwhile); 0: skip (cooling again, or another request probes).
CLAIM_LUA = """
local open_until = redis.call('GET', KEYS[1])
if not open_until then return 1 end
if tonumber(open_until) > tonumber(ARGV[1]) then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""


def redis_prefix(counter_prefix: str) -> str:
    """Where health state lives: next to the admission counters (GATEWAY_COUNTER_PREFIX)."""
    return f"{counter_prefix}:health:"


class _Errors:
    """Any Redis error becomes HealthStoreUnavailable; a non-outage error (a script error,
    wrong credentials, a read-only replica) is logged at ERROR once per type, with Redis's
    message and never the URL (it may hold a password)."""

    def __init__(self) -> None:
        self._reported: set[type[BaseException]] = set()

    @contextmanager
    def unavailable_on_error(self) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            kind = type(exc)
            outage = kind in (RedisConnectionError, RedisTimeoutError) or isinstance(exc, OSError)
            if not outage and kind not in self._reported:
                self._reported.add(kind)
                logger.error("health store error %s: %s", kind.__name__, str(exc)[:300])
            raise HealthStoreUnavailable(kind.__name__) from exc


class RedisHealthStore:
    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        policy: CooldownPolicy | None = None,
        clock: Callable[[], float] = time.time,
        probe_lease_seconds: float = PROBE_LEASE_SECONDS,
    ) -> None:
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            max_connections=200,
        )
        self.policy = policy or CooldownPolicy()
        self._prefix = prefix
        self._clock = clock
        self._lease_ms = int(probe_lease_seconds * 1000)
        self._record = self._redis.register_script(RECORD_LUA)
        self._claim = self._redis.register_script(CLAIM_LUA)
        self._errors = _Errors()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def states(self, deployments: Sequence[str]) -> list[State]:
        if not deployments:
            return []
        keys = _marker_keys(self._prefix, deployments)
        with self._errors.unavailable_on_error():
            values: list[Any] = await self._redis.mget(keys)
        now = self._clock()
        return [
            state_at(_seconds(values[i]), _lease_end(values[i + 1]), now)
            for i in range(0, len(values), 2)
        ]

    async def claim_probe(self, deployment: str) -> bool:
        keys = [self._prefix + "o:" + deployment, self._prefix + "p:" + deployment]
        with self._errors.unavailable_on_error():
            claimed = await self._claim(keys=keys, args=[self._now_ms(), self._lease_ms])
        return bool(claimed)

    async def record(self, deployment: str, attempt: Attempt) -> tuple[Transition, float]:
        policy = self.policy
        p = self._prefix
        keys = [p + kind + deployment for kind in ("h:", "o:", "p:", "r:")] + [p + SET_KEY]
        args: list[Any] = [
            self._now_ms(),
            1 if attempt.ok else 0,
            int(attempt.status),
            int(attempt.latency_ms),
            int(policy.capped_retry_after(attempt.retry_after) * 1000),
            int(policy.failures),
            int(policy.base_seconds * 1000),
            int(policy.max_seconds * 1000),
            RECENT_ATTEMPTS,
            KEEP_SECONDS * 1000,
            deployment,
            int(attempt.at * 1000),
        ]
        with self._errors.unavailable_on_error():
            transition, cooldown_ms = await self._record(keys=keys, args=args)
        return Transition(int(transition)), int(cooldown_ms) / 1000

    async def statuses(self) -> list[DeploymentStatus]:
        with self._errors.unavailable_on_error():
            members = await self._redis.smembers(self._prefix + SET_KEY)
            deployments = sorted(_text(m) for m in members)
            pipe = self._redis.pipeline(transaction=False)
            _queue_reads(pipe, self._prefix, deployments)
            replies = await pipe.execute()
            statuses, gone = _decode(deployments, replies, self._clock())
            if gone:
                await self._redis.srem(self._prefix + SET_KEY, *gone)
        return statuses

    async def close(self) -> None:
        await self._redis.aclose()


def read_statuses(url: str, prefix: str, *, now: float | None = None) -> list[DeploymentStatus]:
    """The same as RedisHealthStore.statuses, synchronously: for the admin and /metrics, which
    run outside the gateway's event loop. Raises HealthStoreUnavailable."""
    errors = _Errors()
    client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        with errors.unavailable_on_error():
            deployments = sorted(_text(m) for m in client.smembers(prefix + SET_KEY))
            pipe = client.pipeline(transaction=False)
            _queue_reads(pipe, prefix, deployments)
            replies = pipe.execute()
            statuses, gone = _decode(deployments, replies, time.time() if now is None else now)
            if gone:
                client.srem(prefix + SET_KEY, *gone)
        return statuses
    finally:
        client.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _marker_keys(prefix: str, deployments: Sequence[str]) -> list[str]:
    keys = []
    for deployment in deployments:
        keys.append(prefix + "o:" + deployment)
        keys.append(prefix + "p:" + deployment)
    return keys


def _seconds(value: bytes | None) -> float | None:
    """An epoch-ms marker as seconds."""
    return None if value is None else int(value) / 1000


def _lease_end(value: bytes | None) -> float | None:
    """The probe lease runs as long as its key exists: Redis expires it, whatever the clocks
    of the replicas say."""
    return None if value is None else math.inf


def _queue_reads(pipe: Any, prefix: str, deployments: Sequence[str]) -> None:
    for deployment in deployments:
        pipe.hgetall(prefix + "h:" + deployment)
        pipe.get(prefix + "o:" + deployment)
        pipe.get(prefix + "p:" + deployment)
        pipe.lrange(prefix + "r:" + deployment, 0, RECENT_ATTEMPTS - 1)


def _decode(
    deployments: Sequence[str], replies: Sequence[Any], now: float
) -> tuple[list[DeploymentStatus], list[str]]:
    """Statuses from the pipelined reads; and the ids whose state has expired."""
    statuses: list[DeploymentStatus] = []
    gone: list[str] = []
    for index, deployment in enumerate(deployments):
        reply = replies[index * 4 : index * 4 + 4]
        if not reply[0] and reply[1] is None:  # neither the hash nor a marker: expired
            gone.append(deployment)
            continue
        statuses.append(_status(deployment, reply, now))
    return statuses, gone


def _status(deployment: str, reply: Sequence[Any], now: float) -> DeploymentStatus:
    """From one deployment's four reads: hash, open marker, probe lease, recent list."""
    fields, open_raw, probe_raw, recent_raw = reply

    def number(name: bytes) -> int:
        return int(fields.get(name, b"0"))

    def moment(name: bytes) -> float | None:
        value = number(name)
        return value / 1000 if value else None

    open_until = _seconds(open_raw)
    return DeploymentStatus(
        deployment=deployment,
        state=state_at(open_until, _lease_end(probe_raw), now),
        open_until=open_until,
        probe_since=_seconds(probe_raw),
        failures=number(b"f"),
        trips=number(b"t"),
        last_error_status=number(b"ls"),
        last_error_at=moment(b"le"),
        last_ok_at=moment(b"lo"),
        recent=tuple(_attempt(entry) for entry in recent_raw),
    )


def _attempt(entry: bytes) -> Attempt:
    at_ms, status, latency_ms, ok = entry.split()
    return Attempt(
        at=int(at_ms) / 1000, status=int(status), latency_ms=int(latency_ms), ok=ok == b"1"
    )
