"""The Router deployment: the routing core over adapter and LlamaCpp handles.

It serves ``RemoteRouter`` (the Gateway with ``deployment.hot_path: router``) and jobs:
``route(plan)`` returns a ``Routed``; ``stream(plan)`` yields the ``RouteInfo``, then the chunks.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from noa.build import routing
from noa.config import parse_config
from noa.routing.plan import Plan
from noa.routing.remote import stream_items
from noa.routing.results import Routed


@serve.deployment(name="Router")
class RouterDeployment:
    async def __init__(  # type: ignore[misc]  # Serve awaits async constructors
        self,
        config: dict[str, Any],
        adapters: dict[str, DeploymentHandle],
        local: dict[str, DeploymentHandle],
        health: DeploymentHandle,
    ) -> None:
        replica = str(serve.get_replica_context().replica_id)
        self._routing = routing.behind_handles(
            parse_config(config), adapters, local, health, replica
        )

    async def route(self, plan: Plan) -> Routed:
        return await self._routing.router.answer(plan)

    def stream(self, plan: Plan) -> AsyncGenerator[Any, None]:
        return stream_items(self._routing.router, plan)

    async def __del__(self) -> None:
        await self._routing.aclose()
