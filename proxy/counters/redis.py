"""Counters in Redis, shared by every gateway process and replica.

Admission is one Lua script: it checks every budget and rate limit of the request and, only if
all pass, reserves on all of them. Redis runs scripts atomically, so concurrent requests on any
number of processes cannot both take the last dollar.

Layout under the prefix:
- `b:<budget>:<period>`: hash, s = settled and r = reserved micros (telemetry/reconcile.py
  reads both); `...:holds`: the reservations included in r, a sorted set of members
  `<reservation id>:<micros>` scored by expiry (ms). Admission first reclaims expired members
  from r, so a worker that dies before settling leaks its reservation for one ttl at most;
  settle subtracts a reservation only if ZREM still finds it (no double release).
- `r:...:rpm:<minute>` and `...:tpm:<minute>`: integer counters expiring with their window.
- `r:...:conc:slots`: sorted set, one member per reservation id scored by expiry: a dead
  worker's slot expires on its own, however busy the key (ZREMRANGEBYSCORE before ZCARD).

Every number sent to Redis is an integer formatted as such: Lua's `-0` or floats make HINCRBY
refuse ("value is not an integer"). Expiries come from the gateway's clock (injectable for
tests); replicas' clocks agree to far better than the reservation ttl.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.counters.base import (
    AdmissionPlan,
    AdmissionResult,
    CounterStoreUnavailable,
    Outcome,
    RateKind,
)

logger = logging.getLogger("gateway.counters")

HOLDS_SUFFIX = ":holds"
SLOTS_SUFFIX = ":slots"  # not the old string key's name: a leftover would answer WRONGTYPE

# Shared by the scripts that read a budget: moves expired reservations of counter `key`
# (listed in `gone`, members of `holds`) out of r and returns the new r.
RECLAIM_LUA = """
local function reclaim(key, holds, gone, now)
  local sum = 0
  for _, m in ipairs(gone) do sum = sum + tonumber(string.match(m, '(%d+)$')) end
  redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
  local r = redis.call('HINCRBY', key, 'r', string.format('%d', -sum))
  if r < 0 then
    redis.call('HSET', key, 'r', 0)
    r = 0
  end
  return r
end
local function reserved(key, holds, r, now)
  local gone = redis.call('ZRANGEBYSCORE', holds, '-inf', now)
  if #gone == 0 then return tonumber(r or '0') end
  return reclaim(key, holds, gone, now)
end
"""

# KEYS: nb budget counters, their nb holds, then nr rate counters.
# ARGV: nb, nr, now (ms), expiry of this reservation (ms), reservation id, its ttl (s), then
# (limit, reserve, ttl, enforce) per budget, then (kind, limit, amount, ttl) per rate limit.
ADMIT_LUA = (
    RECLAIM_LUA
    + """
local nb = tonumber(ARGV[1])
local nr = tonumber(ARGV[2])
local now = ARGV[3]
local missing = {}
local used = {}
for i = 1, nb do
  local v = redis.call('HMGET', KEYS[i], 's', 'r')
  if v[1] then
    used[i] = tonumber(v[1]) + reserved(KEYS[i], KEYS[nb + i], v[2], now)
  else
    missing[#missing + 1] = i - 1
  end
end
if #missing > 0 then return {2, -1, 0, 0, missing} end
for i = 1, nb do
  local a = 6 + (i - 1) * 4
  if ARGV[a + 4] == '1' and used[i] + tonumber(ARGV[a + 2]) > tonumber(ARGV[a + 1]) then
    return {1, i - 1, used[i], 0, {}}
  end
end
local rb = 6 + nb * 4
local rk = 2 * nb
for j = 1, nr do
  local a = rb + (j - 1) * 4
  local key = KEYS[rk + j]
  local kind = ARGV[a + 1]
  local limit = tonumber(ARGV[a + 2])
  if kind == '3' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local current = redis.call('ZCARD', key)
    if current + 1 > limit then return {3, j - 1, current, 0, {}} end
  else
    local current = tonumber(redis.call('GET', key) or '0')
    local over
    if kind == '2' then
      over = current >= limit
    else
      over = current + tonumber(ARGV[a + 3]) > limit
    end
    if over then return {3, j - 1, current, redis.call('PTTL', key), {}} end
  end
end
local expires = ARGV[4]
local id = ARGV[5]
for i = 1, nb do
  local a = 6 + (i - 1) * 4
  local reserve = ARGV[a + 2]
  -- Held once per (id, amount): the same reservation admitted twice is not counted twice.
  if reserve ~= '0'
    and redis.call('ZADD', KEYS[nb + i], 'NX', expires, id .. ':' .. reserve) == 1 then
    -- r holds exactly the sum of holds, so r == reserve means the holds key was just created:
    -- it then gets the counter's ttl, once.
    if redis.call('HINCRBY', KEYS[i], 'r', reserve) == tonumber(reserve)
      and ARGV[a + 3] ~= '0' then
      redis.call('EXPIRE', KEYS[nb + i], ARGV[a + 3])
    end
  end
end
for j = 1, nr do
  local a = rb + (j - 1) * 4
  local key = KEYS[rk + j]
  if ARGV[a + 1] == '3' then
    redis.call('ZADD', key, expires, id)
    redis.call('EXPIRE', key, ARGV[6])  -- only collects an idle key: slots expire by score
  elseif redis.call('INCRBY', key, ARGV[a + 3]) == tonumber(ARGV[a + 3]) then
    redis.call('EXPIRE', key, ARGV[a + 4])  -- a new window; an open one keeps its end
  end
end
return {0, -1, 0, 0, {}}
"""
)

# KEYS as for admission. ARGV: nb, nr, cost, tokens, release, reservation id, then reserve per
# budget, then (kind, amount) per rate limit.
SETTLE_LUA = """
local nb = tonumber(ARGV[1])
local nr = tonumber(ARGV[2])
local cost = ARGV[3]
local id = ARGV[6]
for i = 1, nb do
  local reserve = ARGV[6 + i]
  local held = reserve ~= '0' and redis.call('ZREM', KEYS[nb + i], id .. ':' .. reserve) == 1
  -- A counter that vanished (eviction) is not recreated here: the next admission seeds it
  -- from the ledger, which will include this request.
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if cost ~= '0' then redis.call('HINCRBY', KEYS[i], 's', cost) end
    if held and redis.call('HINCRBY', KEYS[i], 'r', '-' .. reserve) < 0 then
      redis.call('HSET', KEYS[i], 'r', 0)
    end
  end
end
local rb = 6 + nb
local rk = 2 * nb
for j = 1, nr do
  local kind = ARGV[rb + (j - 1) * 2 + 1]
  local key = KEYS[rk + j]
  if kind == '3' then
    if ARGV[5] == '1' then redis.call('ZREM', key, id) end
  elseif kind == '2' and redis.call('EXISTS', key) == 1 then
    local delta = tonumber(ARGV[4]) - tonumber(ARGV[rb + (j - 1) * 2 + 2])
    if delta ~= 0 and redis.call('INCRBY', key, string.format('%d', delta)) < 0 then
      redis.call('SET', key, 0, 'KEEPTTL')
    end
  end
end
return 0
"""

# KEYS: counter, its holds. ARGV: spent, ttl. A new counter holds no reservation: records
# left from before an eviction must not be subtracted from it.
SEED_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 's', ARGV[1], 'r', 0)
  if ARGV[2] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""

# KEYS: counter, its holds. ARGV: now (ms). Settled plus live reserved, or nil.
SPENT_LUA = (
    RECLAIM_LUA
    + """
local v = redis.call('HMGET', KEYS[1], 's', 'r')
if not v[1] then return false end
return tonumber(v[1]) + reserved(KEYS[1], KEYS[2], v[2], ARGV[1])
"""
)


class RedisCounterStore:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "gw:c:",
        version_key: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=1.0, socket_connect_timeout=1.0, max_connections=200
        )
        self._prefix = prefix
        self._version_key = version_key
        self._clock = clock
        self._admit = self._redis.register_script(ADMIT_LUA)
        self._settle = self._redis.register_script(SETTLE_LUA)
        self._seed = self._redis.register_script(SEED_LUA)
        self._spent = self._redis.register_script(SPENT_LUA)
        self._reported: set[type[BaseException]] = set()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _keys(self, plan: AdmissionPlan) -> list[str]:
        prefix = self._prefix
        budgets = [prefix + b.key for b in plan.budgets]
        return (
            budgets
            + [key + HOLDS_SUFFIX for key in budgets]
            + [
                prefix + r.key + SLOTS_SUFFIX if r.kind == RateKind.CONCURRENT else prefix + r.key
                for r in plan.rates
            ]
        )

    @contextmanager
    def _unavailable_on_error(self) -> Iterator[None]:
        """Any Redis error becomes CounterStoreUnavailable: the organization's fail mode decides.

        Outages (connection refused or lost, timeouts) are the caller's to report. Anything
        else (a script error, a read-only replica, wrong credentials, Redis still loading)
        points at a defect or a misconfiguration: logged at ERROR the first time each type
        appears, with its type and Redis's message (never the URL: it may hold a password).
        """
        try:
            yield
        except (RedisError, OSError) as exc:
            kind = type(exc)
            outage = kind in (RedisConnectionError, RedisTimeoutError) or isinstance(exc, OSError)
            if not outage and kind not in self._reported:
                self._reported.add(kind)
                logger.error("counter store error %s: %s", kind.__name__, str(exc)[:300])
            raise CounterStoreUnavailable(kind.__name__) from exc

    async def admit(self, plan: AdmissionPlan) -> AdmissionResult:
        now = self._now_ms()
        ttl = plan.reservation_ttl_seconds
        args: list[Any] = [
            len(plan.budgets),
            len(plan.rates),
            now,
            now + ttl * 1000,
            plan.reservation_id,
            ttl,
        ]
        for b in plan.budgets:
            args += [b.limit_micros, b.reserve_micros, b.ttl_seconds, 1 if b.enforce else 0]
        for r in plan.rates:
            args += [int(r.kind), r.limit, r.amount, r.ttl_seconds]
        with self._unavailable_on_error():
            reply = await self._admit(keys=self._keys(plan), args=args)
        code, index, current, pttl, missing = reply
        return AdmissionResult(
            Outcome(int(code)),
            index=int(index),
            current=int(current),
            retry_after_ms=max(0, int(pttl)),
            missing=tuple(int(m) for m in missing),
        )

    async def settle(
        self, plan: AdmissionPlan, *, cost_micros: int, tokens: int, release: bool = True
    ) -> None:
        args: list[Any] = [
            len(plan.budgets),
            len(plan.rates),
            int(cost_micros),
            int(tokens),
            int(release),
            plan.reservation_id,
        ]
        args += [b.reserve_micros for b in plan.budgets]
        for r in plan.rates:
            args += [int(r.kind), r.amount]
        with self._unavailable_on_error():
            await self._settle(keys=self._keys(plan), args=args)

    async def seed_budget(self, key: str, spent_micros: int, ttl_seconds: int) -> None:
        key = self._prefix + key
        with self._unavailable_on_error():
            await self._seed(
                keys=[key, key + HOLDS_SUFFIX], args=[int(spent_micros), int(ttl_seconds)]
            )

    async def budget_spent(self, key: str) -> int | None:
        key = self._prefix + key
        with self._unavailable_on_error():
            spent = await self._spent(keys=[key, key + HOLDS_SUFFIX], args=[self._now_ms()])
        return None if spent is None else int(spent)

    async def policy_version(self) -> int:
        with self._unavailable_on_error():
            value = await self._redis.get(self._version_key)
        return int(value or 0)

    async def close(self) -> None:
        await self._redis.aclose()


__all__ = ["RateKind", "RedisCounterStore"]
