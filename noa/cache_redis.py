"""L2 over Redis (``redis.asyncio``): shared by every Gateway replica, TTL set per entry.

Size is bounded by Redis itself (configure ``maxmemory`` with an LRU policy); keys live under
``noa:cache:``. Calls time out quickly, so a Redis that hangs costs a request little.
"""

from __future__ import annotations

from typing import Any

PREFIX = "noa:cache:"


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

    async def get(self, key: str) -> bytes | None:
        value = await self._client.get(PREFIX + key)
        return None if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._client.set(PREFIX + key, value, px=max(1, int(ttl_s * 1000)))

    async def aclose(self) -> None:
        await self._client.aclose()
