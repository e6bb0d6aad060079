"""The Gateway: NOA's HTTP ingress, and the app handle Python callers get.

``serve.get_app_handle("noa")`` returns this deployment's handle. Its methods take the same JSON
bodies as the HTTP API and return the same bodies; a body with ``"stream": true`` streams chunks
through ``handle.options(stream=True)``:

    handle = serve.get_app_handle("noa")
    answer = await handle.chat.remote({"model": "smollm2", "messages": [...]})
    async for chunk in handle.options(stream=True).chat.remote({..., "stream": True}): ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.startup import check_where_served
from noa.build import gateway
from noa.config import parse_config
from noa.wire.operations import Operation

Body = dict[str, Any]


@serve.deployment
@serve.ingress()
class Gateway:
    async def __init__(  # type: ignore[misc]  # Serve awaits async constructors
        self,
        config: dict[str, Any],
        local: dict[str, DeploymentHandle],
        router: DeploymentHandle,
        health: DeploymentHandle,
        cache: DeploymentHandle,
        limiter: DeploymentHandle | None = None,
    ) -> None:
        replica = str(serve.get_replica_context().replica_id)
        cfg = parse_config(config)
        await check_where_served(cfg)  # refuses to start where it would be unsafe
        self.parts = gateway.served(cfg, local, router, health, cache, limiter, replica)
        self.parts.start()

    async def __del__(self) -> None:
        await self.parts.aclose()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self.parts.app()

    # -- Python callers ----------------------------------------------------------------------

    async def chat(self, body: Body) -> Body | AsyncIterator[Body]:
        """Same body and result as ``POST /v1/chat/completions``."""
        return await self.parts.service.call(Operation.CHAT, body)

    async def completions(self, body: Body) -> Body | AsyncIterator[Body]:
        """Same body and result as ``POST /v1/completions``."""
        return await self.parts.service.call(Operation.COMPLETIONS, body)

    async def embeddings(self, body: Body) -> Body:
        """Same body and result as ``POST /v1/embeddings``."""
        result = await self.parts.service.call(Operation.EMBEDDINGS, body)
        assert isinstance(result, dict)
        return result

    def cache_stats(self) -> Body:
        """This replica's response cache counters ({"enabled": false} when it is off)."""
        return self.parts.probes.cache_stats()

    def models(self) -> Body:
        """Same result as ``GET /v1/models``."""
        return self.parts.service.list_models()

    def model(self, model_id: str) -> Body:
        """Same result as ``GET /v1/models/{model_id}``."""
        return self.parts.service.get_model(model_id)
