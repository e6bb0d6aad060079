"""The Router deployment: the routing core over adapter and LlamaCpp handles.

It serves Python callers and jobs (``serve.get_deployment_handle("Router", "noa")``) and, with
``deployment.hot_path: router``, the Gateway's requests. Its methods return ``Routed`` objects
and, streamed, a ``RouteInfo`` followed by the chunks.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.support import link_to_health
from noa import assembly
from noa.config import parse_config
from noa.providers.base import Body
from noa.providers.remote import RemoteProvider
from noa.router import Routed
from noa.router_remote import stream_items


def remote_providers(
    config: dict[str, Any],
    adapters: dict[str, DeploymentHandle],
    local: dict[str, DeploymentHandle],
) -> dict[str, RemoteProvider]:
    cfg = parse_config(config)
    providers = {n: RemoteProvider(n, cfg.providers[n].kind, h) for n, h in adapters.items()}
    for name, handle in local.items():
        providers[name] = RemoteProvider(name, "llamacpp", handle, multiplexed=True)
    return providers


@serve.deployment
class Router:
    async def __init__(  # type: ignore[misc]  # Serve awaits async constructors
        self,
        config: dict[str, Any],
        adapters: dict[str, DeploymentHandle],
        local: dict[str, DeploymentHandle],
        health: DeploymentHandle,
    ) -> None:
        providers = remote_providers(config, adapters, local)
        cfg = parse_config(config)
        self._router = assembly.router(cfg, providers, share=assembly.quota_share(cfg))
        replica = str(serve.get_replica_context().replica_id)
        self._link = link_to_health(self._router, health, replica)

    async def chat(self, request: Body) -> Routed:
        return await self._router.chat(request)

    def stream_chat(self, request: Body) -> AsyncGenerator[Any, None]:
        return stream_items(self._router, "stream_chat", request)

    async def completion(self, request: Body) -> Routed:
        return await self._router.completion(request)

    def stream_completion(self, request: Body) -> AsyncGenerator[Any, None]:
        return stream_items(self._router, "stream_completion", request)

    async def embeddings(self, request: Body) -> Routed:
        return await self._router.embeddings(request)
