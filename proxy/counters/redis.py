"""Counters in Redis, shared by every gateway process and replica.

Admission is one Lua script: it checks every budget and rate limit of the request and, only if
all pass, reserves on all of them. Redis runs scripts atomically, so concurrent requests on any
number of processes cannot both take the last dollar.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.counters.base import (
    AdmissionPlan,
    AdmissionResult,
    CounterStoreUnavailable,
    Outcome,
    RateKind,
)

# KEYS: budget counters (hashes with fields s = settled, r = reserved), then rate counters.
# ARGV: nb, nr, then (limit, reserve, ttl, enforce) per budget, then (kind, limit, amount, ttl)
# per rate limit.
ADMIT_LUA = """
local nb = tonumber(ARGV[1])
local nr = tonumber(ARGV[2])
local missing = {}
for i = 1, nb do
  if redis.call('EXISTS', KEYS[i]) == 0 then missing[#missing + 1] = i - 1 end
end
if #missing > 0 then return {2, -1, 0, 0, missing} end
for i = 1, nb do
  local a = 2 + (i - 1) * 4
  local v = redis.call('HMGET', KEYS[i], 's', 'r')
  local used = tonumber(v[1] or '0') + tonumber(v[2] or '0')
  if ARGV[a + 4] == '1' and used + tonumber(ARGV[a + 2]) > tonumber(ARGV[a + 1]) then
    return {1, i - 1, used, 0, {}}
  end
end
local rb = 2 + nb * 4
for j = 1, nr do
  local a = rb + (j - 1) * 4
  local kind = ARGV[a + 1]
  local limit = tonumber(ARGV[a + 2])
  local current = tonumber(redis.call('GET', KEYS[nb + j]) or '0')
  local over
  if kind == '2' then
    over = current >= limit
  else
    over = current + tonumber(ARGV[a + 3]) > limit
  end
  if over then return {3, j - 1, current, redis.call('PTTL', KEYS[nb + j]), {}} end
end
for i = 1, nb do
  local a = 2 + (i - 1) * 4
  redis.call('HINCRBY', KEYS[i], 'r', ARGV[a + 2])
end
for j = 1, nr do
  local a = rb + (j - 1) * 4
  local key = KEYS[nb + j]
  redis.call('INCRBY', key, ARGV[a + 3])
  if ARGV[a + 1] == '3' or redis.call('PTTL', key) < 0 then
    redis.call('EXPIRE', key, ARGV[a + 4])
  end
end
return {0, -1, 0, 0, {}}
"""

# KEYS as for admission. ARGV: nb, nr, cost, tokens, release, then reserve per budget, then
# (kind, amount) per rate limit.
SETTLE_LUA = """
local nb = tonumber(ARGV[1])
local nr = tonumber(ARGV[2])
local cost = ARGV[3]
local tokens = tonumber(ARGV[4])
local release = ARGV[5] == '1'
for i = 1, nb do
  -- A counter that vanished (eviction) is not recreated here: the next admission seeds it
  -- from the ledger, which will include this request.
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HINCRBY', KEYS[i], 's', cost)
    local r = redis.call('HINCRBY', KEYS[i], 'r', -tonumber(ARGV[5 + i]))
    if r < 0 then redis.call('HSET', KEYS[i], 'r', 0) end
  end
end
local rb = 5 + nb
for j = 1, nr do
  local kind = ARGV[rb + (j - 1) * 2 + 1]
  local amount = tonumber(ARGV[rb + (j - 1) * 2 + 2])
  local key = KEYS[nb + j]
  if redis.call('EXISTS', key) == 1 then
    local delta = nil
    if kind == '2' then
      delta = tokens - amount
    elseif kind == '3' and release then
      delta = -amount
    end
    if delta then
      local v = redis.call('INCRBY', key, delta)
      if v < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
    end
  end
end
return 0
"""

SEED_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 's', ARGV[1], 'r', 0)
  if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
  return 1
end
return 0
"""


class RedisCounterStore:
    def __init__(self, url: str, *, prefix: str = "gw:c:", version_key: str) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=1.0, socket_connect_timeout=1.0, max_connections=200
        )
        self._prefix = prefix
        self._version_key = version_key
        self._admit = self._redis.register_script(ADMIT_LUA)
        self._settle = self._redis.register_script(SETTLE_LUA)
        self._seed = self._redis.register_script(SEED_LUA)

    def _keys(self, plan: AdmissionPlan) -> list[str]:
        return [self._prefix + b.key for b in plan.budgets] + [
            self._prefix + r.key for r in plan.rates
        ]

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise CounterStoreUnavailable(str(exc)) from exc

    async def admit(self, plan: AdmissionPlan) -> AdmissionResult:
        args: list[Any] = [len(plan.budgets), len(plan.rates)]
        for b in plan.budgets:
            args += [b.limit_micros, b.reserve_micros, b.ttl_seconds, 1 if b.enforce else 0]
        for r in plan.rates:
            args += [int(r.kind), r.limit, r.amount, r.ttl_seconds]
        code, index, current, pttl, missing = await self._call(self._admit, self._keys(plan), args)
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
        args: list[Any] = [len(plan.budgets), len(plan.rates), cost_micros, tokens, int(release)]
        args += [b.reserve_micros for b in plan.budgets]
        for r in plan.rates:
            args += [int(r.kind), r.amount]
        await self._call(self._settle, self._keys(plan), args)

    async def seed_budget(self, key: str, spent_micros: int, ttl_seconds: int) -> None:
        await self._call(self._seed, [self._prefix + key], [spent_micros, ttl_seconds])

    async def budget_spent(self, key: str) -> int | None:
        try:
            values = await self._redis.hmget(self._prefix + key, ["s", "r"])
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise CounterStoreUnavailable(str(exc)) from exc
        if values[0] is None:
            return None
        return int(values[0]) + int(values[1] or 0)

    async def policy_version(self) -> int:
        try:
            value = await self._redis.get(self._version_key)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise CounterStoreUnavailable(str(exc)) from exc
        return int(value or 0)

    async def close(self) -> None:
        await self._redis.aclose()


__all__ = ["RateKind", "RedisCounterStore"]
