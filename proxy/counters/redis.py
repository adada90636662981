"""Counters in Redis, shared by every gateway process and replica.

Admission is one Lua script: it checks every budget and rate limit of the request and, only if
all pass, reserves on all of them. Redis runs scripts atomically, so concurrent requests on any
number of processes cannot both take the last dollar.

Layout under the prefix:
- `b:<budget>:<period>`: hash, s = settled and r = reserved micros (telemetry/reconcile.py
  reads both).
- `r:...:rpm:<minute>`, `r:...:tpm:<minute>`: integers expiring with their window;
  `r:...:conc:slots`: the concurrency slots taken.
- `hold:<reservation id>`: hash, what one request holds: counter key -> micros reserved there,
  concurrency key -> slots taken. Settle releases only what its record still lists (so a
  second settle, or one after expiry, releases nothing) and deletes the record with its last
  field.
- `holds`: sorted set of reservation ids scored by expiry (ms). Every admission first releases
  the records whose expiry passed (a worker died before settling), a few at a time, so a
  leaked reservation or slot lasts one reservation ttl at most, however busy its counters.
  That step reads records and counters the script was not given as KEYS: fine on one Redis
  (this store does not support Redis Cluster; its multi-key admission never did).

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

INDEX_KEY = "holds"
RECORD_PREFIX = "hold:"
RECLAIM_BATCH = 64  # expired records released per admission: bounds one script's run time
# Concurrency counts live under a new name since slots are released through records: a count
# leaked under the old name (by a worker that died before) is left behind, not inherited.
SLOTS_SUFFIX = ":slots"

# Shared: releases what expired reservations hold. `index` is the holds key, `base` the
# prefix of record keys. A counter that vanished is not recreated.
RECLAIM_LUA = """
local function release(key, amount)
  if redis.call('EXISTS', key) == 0 then return end
  if redis.call('TYPE', key).ok == 'hash' then
    if redis.call('HINCRBY', key, 'r', '-' .. amount) < 0 then redis.call('HSET', key, 'r', 0) end
  elseif redis.call('DECRBY', key, amount) < 0 then
    redis.call('SET', key, 0, 'KEEPTTL')
  end
end
local function reclaim(index, base, now, batch)
  local gone = redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, batch)
  if #gone == 0 then return 0 end
  for _, id in ipairs(gone) do
    local held = redis.call('HGETALL', base .. id)
    for k = 1, #held, 2 do release(held[k], held[k + 1]) end
    redis.call('DEL', base .. id)
  end
  redis.call('ZREM', index, unpack(gone))
  return #gone
end
"""

# KEYS: nb budget counters, nr rate counters, the holds index, this request's record.
# ARGV: nb, nr, now (ms), expiry (ms), reservation id, reservation ttl (s), record prefix,
# reclaim batch, then (limit, reserve, enforce) per budget, then (kind, limit, amount, ttl)
# per rate limit.
ADMIT_LUA = (
    RECLAIM_LUA
    + """
local nb = tonumber(ARGV[1])
local nr = tonumber(ARGV[2])
local index = KEYS[nb + nr + 1]
local record = KEYS[nb + nr + 2]
reclaim(index, ARGV[7], ARGV[3], ARGV[8])
local missing = {}
local used = {}
for i = 1, nb do
  local v = redis.call('HMGET', KEYS[i], 's', 'r')
  if v[1] then
    used[i] = tonumber(v[1]) + tonumber(v[2] or '0')
  else
    missing[#missing + 1] = i - 1
  end
end
if #missing > 0 then return {2, -1, 0, 0, missing} end
-- The fullest enforced budget (used / limit, compared in integers) is reported on admission.
local fullest, fullest_used, fullest_limit = -1, 0, 1
for i = 1, nb do
  local a = 8 + (i - 1) * 3
  local limit = tonumber(ARGV[a + 1])
  if ARGV[a + 3] == '1' then
    if used[i] + tonumber(ARGV[a + 2]) > limit then
      return {1, i - 1, used[i], 0, {}}
    end
    if limit > 0 and (fullest < 0 or used[i] * fullest_limit > fullest_used * limit) then
      fullest, fullest_used, fullest_limit = i - 1, used[i], limit
    end
  end
end
local rb = 8 + nb * 3
for j = 1, nr do
  local a = rb + (j - 1) * 4
  local key = KEYS[nb + j]
  local kind = ARGV[a + 1]
  local limit = tonumber(ARGV[a + 2])
  local current = tonumber(redis.call('GET', key) or '0')
  local over
  if kind == '2' then
    over = current >= limit
  else
    over = current + tonumber(ARGV[a + 3]) > limit
  end
  if over then
    local pttl = 0
    if kind ~= '3' then pttl = redis.call('PTTL', key) end
    return {3, j - 1, current, pttl, {}}
  end
end
-- What this request holds goes to its record. A request's second plan (failover) finds the
-- record there: amounts on one counter then add up.
local fresh = nil
local fields = {}
local function hold(key, amount)
  if fresh == nil then fresh = redis.call('EXISTS', record) == 0 end
  if fresh then
    fields[#fields + 1] = key
    fields[#fields + 1] = amount
  else
    redis.call('HINCRBY', record, key, amount)
  end
end
for i = 1, nb do
  local reserve = ARGV[8 + (i - 1) * 3 + 2]
  if reserve ~= '0' then
    redis.call('HINCRBY', KEYS[i], 'r', reserve)
    hold(KEYS[i], reserve)
  end
end
for j = 1, nr do
  local a = rb + (j - 1) * 4
  local key = KEYS[nb + j]
  if ARGV[a + 1] == '3' then
    redis.call('INCRBY', key, ARGV[a + 3])
    -- The key's ttl only collects an idle key: a leaked slot is released through its record.
    redis.call('EXPIRE', key, ARGV[6])
    hold(key, ARGV[a + 3])
  elseif redis.call('INCRBY', key, ARGV[a + 3]) == tonumber(ARGV[a + 3]) then
    redis.call('EXPIRE', key, ARGV[a + 4])  -- a new window; an open one keeps its end
  end
end
if #fields > 0 then redis.call('HSET', record, unpack(fields)) end
if fresh ~= nil then redis.call('ZADD', index, ARGV[4], ARGV[5]) end
return {0, fullest, fullest_used, 0, {}}
"""
)

# KEYS as for admission. ARGV: nb, nr, cost, tokens, release, reservation id, then
# (kind, amount) per rate limit.
SETTLE_LUA = """
local nb = tonumber(ARGV[1])
local nr = tonumber(ARGV[2])
local cost = ARGV[3]
local record = KEYS[nb + nr + 2]
local fields = {}
for i = 1, nb do fields[i] = KEYS[i] end
for j = 1, nr do
  if ARGV[6 + (j - 1) * 2 + 1] == '3' and ARGV[5] == '1' then
    fields[#fields + 1] = KEYS[nb + j]
  end
end
local held = {}
if #fields > 0 then held = redis.call('HMGET', record, unpack(fields)) end
local released = false
for i = 1, nb do
  -- A counter that vanished (eviction) is not recreated here: the next admission seeds it
  -- from the ledger, which will include this request.
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if cost ~= '0' then redis.call('HINCRBY', KEYS[i], 's', cost) end
    if held[i] and redis.call('HINCRBY', KEYS[i], 'r', '-' .. held[i]) < 0 then
      redis.call('HSET', KEYS[i], 'r', 0)
    end
  end
  released = released or held[i]
end
for f = nb + 1, #fields do
  local key = fields[f]
  if held[f] then
    released = true
    if redis.call('EXISTS', key) == 1 and redis.call('DECRBY', key, held[f]) < 0 then
      redis.call('SET', key, 0, 'KEEPTTL')
    end
  end
end
if released then
  redis.call('HDEL', record, unpack(fields))
  if redis.call('EXISTS', record) == 0 then redis.call('ZREM', KEYS[nb + nr + 1], ARGV[6]) end
end
for j = 1, nr do
  local a = 6 + (j - 1) * 2
  local key = KEYS[nb + j]
  if ARGV[a + 1] == '2' and redis.call('EXISTS', key) == 1 then
    local delta = tonumber(ARGV[4]) - tonumber(ARGV[a + 2])
    if delta ~= 0 and redis.call('INCRBY', key, string.format('%d', delta)) < 0 then
      redis.call('SET', key, 0, 'KEEPTTL')
    end
  end
end
return 0
"""

SEED_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 's', ARGV[1], 'r', 0)
  if ARGV[2] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
  return 1
end
return 0
"""

# KEYS: counter, the holds index. ARGV: now (ms), record prefix, reclaim batch. Settled plus
# live reserved (every expired reservation released first), or nil.
SPENT_LUA = (
    RECLAIM_LUA
    + """
while reclaim(KEYS[2], ARGV[2], ARGV[1], ARGV[3]) == tonumber(ARGV[3]) do end
local v = redis.call('HMGET', KEYS[1], 's', 'r')
if not v[1] then return false end
return tonumber(v[1]) + tonumber(v[2] or '0')
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
        return [
            *(prefix + b.key for b in plan.budgets),
            *(
                prefix + r.key + SLOTS_SUFFIX if r.kind == RateKind.CONCURRENT else prefix + r.key
                for r in plan.rates
            ),
            prefix + INDEX_KEY,
            prefix + RECORD_PREFIX + plan.reservation_id,
        ]

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
            self._prefix + RECORD_PREFIX,
            RECLAIM_BATCH,
        ]
        for b in plan.budgets:
            args += [b.limit_micros, b.reserve_micros, 1 if b.enforce else 0]
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
        for r in plan.rates:
            args += [int(r.kind), r.amount]
        with self._unavailable_on_error():
            await self._settle(keys=self._keys(plan), args=args)

    async def seed_budget(self, key: str, spent_micros: int, ttl_seconds: int) -> None:
        with self._unavailable_on_error():
            await self._seed(keys=[self._prefix + key], args=[int(spent_micros), int(ttl_seconds)])

    async def budget_spent(self, key: str) -> int | None:
        keys = [self._prefix + key, self._prefix + INDEX_KEY]
        args: list[Any] = [self._now_ms(), self._prefix + RECORD_PREFIX, RECLAIM_BATCH]
        with self._unavailable_on_error():
            spent = await self._spent(keys=keys, args=args)
        return None if spent is None else int(spent)

    async def policy_version(self) -> int:
        with self._unavailable_on_error():
            value = await self._redis.get(self._version_key)
        return int(value or 0)

    async def close(self) -> None:
        await self._redis.aclose()


__all__ = ["RateKind", "RedisCounterStore"]
