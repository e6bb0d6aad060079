"""L2 over Redis (``redis.asyncio``): shared by every Gateway replica, TTL set per entry.

Size is bounded by Redis itself (configure ``maxmemory`` with an LRU policy); entries live under
``noa:cache:``, single-flight leases under ``noa:flight:``. Calls time out quickly, so a Redis
that hangs costs a request little.
"""

from __future__ import annotations

from typing import Any

from noa.cache.flight import DONE, State

PREFIX = "noa:cache:"
FLIGHT = "noa:flight:"  # single-flight leases (see noa.cache.flight)

# The entry if stored; else the lease for ARGV[1] if it is free (or already its own).
_FLIGHT = """
local entry = redis.call('GET', KEYS[1])
if entry then return {1, entry} end
local holder = redis.call('GET', KEYS[2])
if (not holder) or holder == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return {0, 'lead'}
end
if holder == ARGV[3] then return {0, 'done'} end
return {0, 'wait'}
"""
_FLIGHT_DONE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
end
return 0
"""


class RedisTier:
    def __init__(self, url: str, *, timeout_s: float = 0.5, name: str = "l2") -> None:
        import redis.asyncio as redis

        self.name = name
        self._client: Any = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
        )
        self._flight = self._client.register_script(_FLIGHT)
        self._flight_done = self._client.register_script(_FLIGHT_DONE)

    async def get(self, key: str) -> bytes | None:
        value = await self._client.get(PREFIX + key)
        return None if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._client.set(PREFIX + key, value, px=_ms(ttl_s))

    async def flight(self, key: str, owner: str, lease_s: float) -> tuple[bytes | None, State]:
        found, value = await self._flight(
            keys=[PREFIX + key, FLIGHT + key], args=[owner, _ms(lease_s), DONE]
        )
        if found:
            return bytes(value), "done"
        state = value.decode() if isinstance(value, bytes) else str(value)
        if state not in ("lead", "wait", "done"):
            raise ValueError(f"unexpected flight state {state!r}")
        return None, state  # type: ignore[return-value]

    async def flight_done(self, key: str, owner: str, linger_s: float) -> None:
        await self._flight_done(keys=[FLIGHT + key], args=[owner, _ms(linger_s), DONE])

    async def aclose(self) -> None:
        await self._client.aclose()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
