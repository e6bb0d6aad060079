"""CacheActor and HealthActor: one per app, shared by every Gateway replica."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from noa import assembly
from noa.cache_store import TtlLru
from noa.config import parse_config
from noa.health import HealthMonitor
from noa.providers.remote import RemoteProvider


@serve.deployment
class CacheActor:
    """The shared in-memory tier when no Redis is configured."""

    def __init__(self, max_entries: int = 10_000, ttl_s: float = 3600.0) -> None:
        self._store = TtlLru(max_entries, ttl_s)

    def get(self, key: str) -> Any | None:
        return self._store.get(key)

    def set(self, key: str, value: Any, ttl_s: float | None = None) -> None:
        self._store.set(key, value, ttl_s)

    def delete(self, key: str) -> bool:
        return self._store.delete(key)

    def stats(self) -> dict[str, int]:
        return self._store.stats()


@serve.deployment
class HealthActor:
    """Probes every provider on an interval (no tokens spent) and serves the latest results."""

    async def __init__(  # type: ignore[misc]  # Serve awaits async constructors
        self, config: dict[str, Any], local: dict[str, DeploymentHandle]
    ) -> None:
        cfg = parse_config(config)
        self._providers: dict[str, Any] = assembly.cloud_providers(cfg)
        for name, handle in local.items():
            self._providers[name] = RemoteProvider(name, "llamacpp", handle)
        self._monitor = HealthMonitor({n: p.check for n, p in self._providers.items()})
        self._interval = cfg.deployment.health_check_interval_s
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self._monitor.check_all()
            await asyncio.sleep(self._interval)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return self._monitor.snapshot()

    async def check_now(self) -> dict[str, dict[str, Any]]:
        return await self._monitor.check_all()
