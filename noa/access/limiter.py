"""Limiter backends over the one ``LimitState`` semantics (see ``noa/access/limits.py``).

- ``LocalLimiter``: the state in this process; exact when one replica makes every decision.
- ``RedisLimiter``: the same decision as one Lua script, atomic in Redis, on Redis's clock;
  exact across replicas.
- The LimiterActor (``noa/access/remote.py``) holding a ``LocalLimiter`` when there is no Redis.
- ``FailoverLimiter``: when the shared backend fails, either decide locally (fail open, the
  default: a warning once, a counter) or refuse with 503 (fail closed).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from noa.access.limits import Decision, LimitState, Reserve, Take
from noa.errors import ServiceUnavailableError

Clock = Callable[[], float]
logger = logging.getLogger("noa.limits")
PREFIX = "noa:limits:"
REVOKED = PREFIX + "revoked"


class Limiter(Protocol):
    async def admit(
        self, takes: list[Take], reserves: list[Reserve], principal: str | None = None
    ) -> Decision: ...

    async def adjust(
        self, tokens: dict[str, tuple[float, float]], dollars: dict[str, float]
    ) -> None: ...

    async def revoke(self, principal: str) -> None: ...


class LocalLimiter:
    def __init__(self, clock: Clock = time.time, state: LimitState | None = None) -> None:
        self.state = state or LimitState()
        self.clock = clock
        self._calls = 0

    async def admit(
        self, takes: list[Take], reserves: list[Reserve], principal: str | None = None
    ) -> Decision:
        now = self.clock()
        self._calls += 1
        if self._calls % 10_000 == 0:
            self.state.prune(now)
        return self.state.admit(takes, reserves, now, principal)

    async def adjust(
        self, tokens: dict[str, tuple[float, float]], dollars: dict[str, float]
    ) -> None:
        self.state.adjust(tokens, dollars, self.clock())

    async def revoke(self, principal: str) -> None:
        self.state.revoke(principal)


# Time is Redis's own (TIME), so replicas on machines whose clocks disagree decide alike. ARGV[1]
# is "" but in tests, which decide at the time it names instead.
NOW_LUA = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# KEYS: revoked set, then the buckets, then the budgets (all prefixed).
# ARGV: "" (or a test's time), principal ("" for none), #buckets, #budgets, then (limit, cost)
# per bucket, then (limit, amount, expires_in_s, seed) per budget. Same arithmetic as
# LimitState.admit.
ADMIT_LUA = (
    NOW_LUA
    + """
local P = #ARGV[5]
local principal = ARGV[2]
local nt = tonumber(ARGV[3])
local nr = tonumber(ARGV[4])
if principal ~= '' and redis.call('SISMEMBER', KEYS[1], principal) == 1 then
  return cjson.encode({allowed=false, reason='revoked', scope=principal, retry_after_s=0})
end
local function bare(key) return string.sub(key, P + 1) end
local levels, limits, costs = {}, {}, {}
for i = 1, nt do
  local limit = tonumber(ARGV[5 + 2 * i - 1])
  local cost = tonumber(ARGV[5 + 2 * i])
  local v = redis.call('HMGET', KEYS[1 + i], 'level', 'at')
  local level = limit
  if v[1] then
    level = math.min(limit, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * limit / 60)
  end
  levels[i], limits[i], costs[i] = level, limit, cost
end
local function report()
  local r = {}
  for i = 1, nt do
    local rate = limits[i] / 60
    local reset = 0
    if rate > 0 then reset = math.max(0, (limits[i] - levels[i]) / rate) end
    r[bare(KEYS[1 + i])] = {limits[i], math.max(0, math.floor(levels[i])), reset}
  end
  return r
end
for i = 1, nt do
  if costs[i] > levels[i] then
    local wait = 60
    if costs[i] <= limits[i] then wait = (costs[i] - levels[i]) / (limits[i] / 60) end
    local key = bare(KEYS[1 + i])
    return cjson.encode({allowed=false, reason=string.match(key, '^[^:]+'), scope=key,
                         retry_after_s=wait, levels=report()})
  end
end
local base = 5 + 2 * nt
local spent, present, spent_out = {}, {}, {}
for j = 1, nr do
  local key = KEYS[1 + nt + j]
  local limit = tonumber(ARGV[base + 4 * j - 3])
  local amount = tonumber(ARGV[base + 4 * j - 2])
  local expires = tonumber(ARGV[base + 4 * j - 1])
  local seed = tonumber(ARGV[base + 4 * j])
  local s = redis.call('GET', key)
  local current = seed
  if s then current = tonumber(s) end
  spent[j], present[j] = current, s
  spent_out[bare(key)] = current
  if current + amount > limit then
    return cjson.encode({allowed=false, reason='budget', scope=bare(key), retry_after_s=expires,
                         levels=report(), spent=spent_out})
  end
end
for i = 1, nt do
  levels[i] = levels[i] - costs[i]
  redis.call('HSET', KEYS[1 + i], 'level', tostring(levels[i]), 'at', tostring(now))
  local full_in = (limits[i] - levels[i]) / (limits[i] / 60)
  redis.call('PEXPIRE', KEYS[1 + i], math.ceil((full_in + 1) * 1000))
end
for j = 1, nr do
  local key = KEYS[1 + nt + j]
  local amount = tonumber(ARGV[base + 4 * j - 2])
  local expires = tonumber(ARGV[base + 4 * j - 1])
  spent[j] = spent[j] + amount
  spent_out[bare(key)] = spent[j]
  if present[j] then
    redis.call('SET', key, tostring(spent[j]), 'KEEPTTL')
  else
    redis.call('SET', key, tostring(spent[j]), 'PX', math.ceil(expires * 1000))
  end
end
return cjson.encode({allowed=true, levels=report(), spent=spent_out})
"""
)

# KEYS: the buckets, then the budgets. ARGV: offset, #buckets, then (limit, extra) per bucket,
# then extra per budget.
ADJUST_LUA = (
    NOW_LUA
    + """
local nt = tonumber(ARGV[2])
for i = 1, nt do
  local limit = tonumber(ARGV[2 + 2 * i - 1])
  local extra = tonumber(ARGV[2 + 2 * i])
  local v = redis.call('HMGET', KEYS[i], 'level', 'at')
  local level = limit
  if v[1] then
    level = math.min(limit, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * limit / 60)
  end
  level = math.min(limit, level - extra)
  redis.call('HSET', KEYS[i], 'level', tostring(level), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(((limit - level) / (limit / 60) + 1) * 1000))
end
for j = nt + 1, #KEYS do
  local s = redis.call('GET', KEYS[j])
  if s then
    local spent = math.max(0, tonumber(s) + tonumber(ARGV[2 + 2 * nt + j - nt]))
    redis.call('SET', KEYS[j], tostring(spent), 'KEEPTTL')
  end
end
return 1
"""
)


class RedisLimiter:
    """The decision in Redis: one script call per request, atomic across every replica, on
    Redis's clock. ``test_clock`` (tests only) decides at its time instead."""

    def __init__(
        self, url: str, timeout_s: float = 0.5, *, test_clock: Clock | None = None
    ) -> None:
        import redis.asyncio as redis

        self._test_clock = test_clock
        self._client: Any = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._admit = self._client.register_script(ADMIT_LUA)
        self._adjust = self._client.register_script(ADJUST_LUA)

    async def admit(
        self, takes: list[Take], reserves: list[Reserve], principal: str | None = None
    ) -> Decision:
        keys = [REVOKED, *(PREFIX + t.key for t in takes), *(PREFIX + r.key for r in reserves)]
        args: list[Any] = [self._now(), principal or "", len(takes), len(reserves), PREFIX]
        for t in takes:
            args += [repr(float(t.limit)), repr(float(t.cost))]
        for r in reserves:
            args += [repr(r.limit), repr(r.amount), repr(r.expires_in_s), repr(r.seed)]
        raw = await self._admit(keys=keys, args=args)
        return Decision.from_wire(json.loads(raw))

    async def adjust(
        self, tokens: dict[str, tuple[float, float]], dollars: dict[str, float]
    ) -> None:
        if not tokens and not dollars:
            return
        keys = [PREFIX + k for k in tokens] + [PREFIX + k for k in dollars]
        args: list[Any] = [self._now(), len(tokens)]
        for limit, extra in tokens.values():
            args += [repr(float(limit)), repr(float(extra))]
        args += [repr(float(v)) for v in dollars.values()]
        await self._adjust(keys=keys, args=args)

    async def revoke(self, principal: str) -> None:
        await self._client.sadd(REVOKED, principal)

    def _now(self) -> str:
        return "" if self._test_clock is None else repr(float(self._test_clock()))

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass(eq=False)
class FailoverLimiter:
    """``shared`` while it answers; when it fails, ``local`` (``on_failure="open"``) or 503."""

    shared: Limiter
    local: Limiter
    on_failure: Literal["open", "closed"] = "open"
    clock: Clock = time.monotonic
    retry_after_s: float = 5.0
    failures: int = field(default=0, init=False)  # decisions the shared backend could not make
    _down_until: float = field(default=0.0, init=False)

    def _failed(self, error: Exception) -> None:
        self.failures += 1
        if not self._down_until:
            logger.warning(
                "the shared limiter failed (%s: %s); %s for %g s",
                type(error).__name__,
                error,
                "deciding locally" if self.on_failure == "open" else "refusing requests",
                self.retry_after_s,
            )
        self._down_until = self.clock() + self.retry_after_s

    def _unavailable(self) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            "Rate limits cannot be checked right now (the limiter's store is unreachable)",
            code="limiter_unavailable",
            retry_after=math.ceil(self.retry_after_s),
        )

    async def admit(
        self, takes: list[Take], reserves: list[Reserve], principal: str | None = None
    ) -> Decision:
        if self._down_until and self.clock() < self._down_until:
            self.failures += 1
            if self.on_failure == "closed":
                raise self._unavailable()
            return await self.local.admit(takes, reserves, principal)
        try:
            decision = await self.shared.admit(takes, reserves, principal)
        except Exception as e:
            self._failed(e)
            if self.on_failure == "closed":
                raise self._unavailable() from None
            return await self.local.admit(takes, reserves, principal)
        if self._down_until:
            self._down_until = 0.0
            logger.warning("the shared limiter is back")
        return decision

    async def adjust(
        self, tokens: dict[str, tuple[float, float]], dollars: dict[str, float]
    ) -> None:
        try:
            await self.shared.adjust(tokens, dollars)
        except Exception as e:
            self._failed(e)
            await self.local.adjust(tokens, dollars)

    async def revoke(self, principal: str) -> None:
        await self.local.revoke(principal)
        try:
            await self.shared.revoke(principal)
        except Exception as e:
            self._failed(e)
