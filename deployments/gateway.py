"""The Gateway: NOA's HTTP ingress, and the app handle Python callers get.

``serve.get_app_handle("noa")`` returns this deployment's handle. Its methods take the same JSON
bodies as the HTTP API and return the same bodies; a body with ``"stream": true`` streams chunks
through ``handle.options(stream=True)``:

    handle = serve.get_app_handle("noa")
    answer = await handle.chat.remote({"model": "smollm2", "messages": [...]})
    async for chunk in handle.options(stream=True).chat.remote({..., "stream": True}): ...
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

import noa
from deployments.support import ActorLimiter, ActorTier, link_to_health
from noa import access, assembly, tracing
from noa.config import parse_config
from noa.dependencies import DependencyChecks
from noa.error_reporting import init_error_reporting
from noa.health import readiness
from noa.http.app import create_app
from noa.http.render import json_response
from noa.logs import configure_logging
from noa.metrics import Metrics, Snapshot, cache_series
from noa.providers.base import Provider
from noa.providers.remote import RemoteProvider
from noa.router_remote import RemoteRouter
from noa.service import NoaService, RouterLike

Body = dict[str, Any]
METRICS_PUSH_S = 2.0  # how stale another replica's counts may be in a scrape


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
        configure_logging()
        self.tracing = tracing.from_environment()  # off unless an OTLP endpoint is configured
        init_error_reporting()  # Sentry, when SENTRY_DSN is set
        self._config = parse_config(config)
        self._health = health
        self._registry = assembly.registry(self._config)
        self._link = None
        core: RouterLike
        if self._config.deployment.hot_path == "inline":
            # Measured fastest: cloud SDK clients in this replica, zero handle hops for them.
            providers: dict[str, Provider] = dict(assembly.cloud_providers(self._config))
            for name, handle in local.items():
                providers[name] = RemoteProvider(name, "llamacpp", handle, multiplexed=True)
            share = assembly.quota_share(self._config)
            inline = assembly.router(self._config, providers, share=share, tracing=self.tracing)
            replica = str(serve.get_replica_context().replica_id)
            self._link = link_to_health(inline, health, replica)
            core = inline
        else:
            core = RemoteRouter(router)
        self.cache = assembly.response_cache(self._config, self._registry, ActorTier(cache))
        shared = ActorLimiter(limiter) if limiter is not None else None
        self.access = access.build(self._config, self._registry, shared)
        self.service = NoaService(
            core, self._registry, self.cache, self.access.accounting, tracing=self.tracing
        )
        self._dependencies = DependencyChecks(self.access.db, self._config.redis.url())
        self.metrics = Metrics()
        self.access.accounting.metrics = self.metrics
        gate = self.access.accounting.gate
        self.metrics.add_source(
            lambda: {"noa_rate_limit_rejections_total": {(r,): n for r, n in gate.refused.items()}}
        )
        if self.cache is not None:
            self.metrics.add_source(self._cache_series)
        self._replica = str(serve.get_replica_context().replica_id)
        self._pushing = asyncio.get_running_loop().create_task(self._push_metrics())

    def _cache_series(self) -> Snapshot:
        return cache_series(self.cache.stats()) if self.cache is not None else {}

    async def _push_metrics(self) -> None:
        """This replica's metrics to the shared board, every couple of seconds."""
        while True:
            await asyncio.sleep(METRICS_PUSH_S)
            with contextlib.suppress(Exception):
                await self._health.report_metrics.remote(self._replica, self.metrics.snapshot())

    async def _providers_health(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = await self._health.snapshot.remote()
        return snapshot.get("providers", {})

    async def _metrics_total(self) -> Snapshot:
        snapshot: Snapshot = await self._health.metrics.remote(
            self._replica, self.metrics.snapshot()
        )
        return snapshot

    async def __del__(self) -> None:
        """A clean shutdown: write the buffered usage, finish storing cache entries, hand in
        the last counts."""
        self._pushing.cancel()
        with contextlib.suppress(Exception):
            await self._health.report_metrics.remote(self._replica, self.metrics.snapshot())
        await self._dependencies.aclose()
        await self.access.aclose()
        if self.cache is not None:
            await self.cache.aclose()

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = create_app(
            self.service,
            auth=self.access.auth,
            admin=self.access.admin,
            max_body_bytes=self._config.server.max_body_bytes,
            access_log=self._config.server.access_log,
            metrics=self.metrics,
            metrics_total=self._metrics_total,
            providers_health=self._providers_health,
            tracing=self.tracing,
        )

        async def providers_health() -> Any:
            return json_response(await self._health.snapshot.remote())

        async def ready() -> Any:
            is_ready, body = readiness(self._registry, await self._health.snapshot.remote())
            body["dependencies"] = await self._dependencies.check()
            up = all(d["status"] == "ok" for d in body["dependencies"].values())
            if not up:
                body["status"] = "not_ready"
            return json_response(body, 200 if is_ready and up else 503)

        async def status() -> Any:
            shared = await self._health.snapshot.remote()
            d = self._config.deployment
            return json_response(
                {
                    "version": noa.__version__,
                    "replica": self._replica,
                    "deployments": {
                        "gateway": d.gateway.model_dump(mode="json"),
                        "router": d.router.model_dump(mode="json"),
                        "llamacpp": d.llamacpp.model_dump(mode="json"),
                        "hot_path": d.hot_path,
                    },
                    "models": [m["id"] for m in self.service.list_models()["data"]],
                    "providers": shared.get("providers", {}),
                    "breakers": shared.get("breakers", {}),
                    "dependencies": await self._dependencies.check(),
                }
            )

        async def cache_stats() -> Any:
            return json_response(self.cache_stats())

        app.add_api_route(
            "/health/cache",
            cache_stats,
            methods=["GET"],
            tags=["Health"],
            summary="This replica's response cache: answers by outcome; hits/misses per tier",
        )
        app.add_api_route(
            "/health/providers",
            providers_health,
            methods=["GET"],
            tags=["Health"],
            summary="Latest active probe, shared breakers and traffic of each provider",
        )
        app.add_api_route(
            "/status",
            status,
            methods=["GET"],
            tags=["Health"],
            summary="Version, deployments, replicas, models, providers and breaker states",
        )
        app.add_api_route(
            "/health/ready",
            ready,
            methods=["GET"],
            tags=["Health"],
            summary="Ready when the database (and Redis, when configured) answers and every model"
            " has a provider that can answer (503 with the failing checks otherwise)",
        )
        return app

    # -- Python callers ----------------------------------------------------------------------

    async def chat(self, body: Body) -> Body | AsyncIterator[Body]:
        """Same body and result as ``POST /v1/chat/completions``."""
        return await self.service.call("chat", body)

    async def completions(self, body: Body) -> Body | AsyncIterator[Body]:
        """Same body and result as ``POST /v1/completions``."""
        return await self.service.call("completions", body)

    async def embeddings(self, body: Body) -> Body:
        """Same body and result as ``POST /v1/embeddings``."""
        result = await self.service.call("embeddings", body)
        assert isinstance(result, dict)
        return result

    def cache_stats(self) -> Body:
        """This replica's response cache counters ({"enabled": false} when it is off)."""
        if self.cache is None:
            return {"enabled": False}
        return {"enabled": True, **self.cache.stats()}

    def models(self) -> Body:
        """Same result as ``GET /v1/models``."""
        return self.service.list_models()

    def model(self, model_id: str) -> Body:
        """Same result as ``GET /v1/models/{model_id}``."""
        return self.service.get_model(model_id)
