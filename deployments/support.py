"""CacheActor, LimiterActor and HealthActor: one per app, shared by every Gateway replica.

Each is its core class from ``noa/`` deployed as it is (the handles call the core's methods).
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from noa.access.remote import LimiterEndpoint
from noa.build.health import health_parts
from noa.cache.shared import SharedMemory
from noa.config import parse_config
from noa.routing.health_center import HealthCenter


@serve.deployment
class CacheActor(SharedMemory):
    """The shared in-memory tier when no Redis is configured."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        shared = parse_config(config or {}).cache.shared
        super().__init__(shared.max_entries, shared.ttl_s)


@serve.deployment
class LimiterActor(LimiterEndpoint):
    """Rate limits and budgets for every Gateway replica when there are several and no Redis:
    each decision is one atomic step here, so limits are exact across replicas."""


@serve.deployment
class HealthActor(HealthCenter):
    """Probes every provider on an interval (no tokens spent), and holds the breaker state and
    traffic stats every routing replica shares, and the Gateways' metrics."""

    async def __init__(  # type: ignore[misc]  # Serve awaits async constructors
        self, config: dict[str, Any], local: dict[str, DeploymentHandle]
    ) -> None:
        super().__init__(health_parts(parse_config(config), local))
        self.start()

    async def __del__(self) -> None:
        await self.aclose()
