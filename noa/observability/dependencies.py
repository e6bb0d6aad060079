"""Readiness of what a Gateway depends on besides providers: its database, and Redis when one is
configured. Cheap checks with a short timeout (``SELECT 1``, ``PING``), reported by name."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from noa.storage.db import Database


class DependencyChecks:
    def __init__(self, db: Database, redis_url: str | None, timeout_s: float = 2.0) -> None:
        self.db = db
        self.redis_url = redis_url
        self.timeout_s = timeout_s
        self._redis: Any = None

    async def _database(self) -> None:
        await self.db.fetch("SELECT 1")

    async def _ping(self) -> None:
        assert self.redis_url is not None
        if self._redis is None:
            import redis.asyncio as redis

            self._redis = redis.from_url(self.redis_url, socket_timeout=self.timeout_s)
        await self._redis.ping()

    async def check(self) -> dict[str, dict[str, Any]]:
        """``{"database": {"status": "ok"|"down", "latency_ms", "error"?}, "redis": ...}``."""
        checks = {"database": self._database}
        if self.redis_url:
            checks["redis"] = self._ping
        results: dict[str, dict[str, Any]] = {}
        for name, check in checks.items():
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.timeout_s):
                    await check()
                results[name] = {"status": "ok"}
            except Exception as e:  # down, unreachable, or too slow to count as up
                results[name] = {"status": "down", "error": f"{type(e).__name__}: {e}"[:300]}
            results[name]["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return results

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
