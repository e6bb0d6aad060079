"""A Gateway replica's cores, wired in one place: the registry, the router (in this replica,
linked to the app's shared health, or the Router deployment's), the response cache, access
control, metrics and probes, the service over them, and the ASGI app.

``Placement`` says where the collaborators live: in this process (tests, tools) or behind
Serve handles (``served``); the wiring is the same either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI

from noa.access.limiter import Limiter
from noa.access.remote import RemoteLimiter
from noa.build import access as access_build
from noa.build import cache as cache_build
from noa.build import routing
from noa.build.access import Access
from noa.build.providers import cloud_providers, inprocess_local, remote_local
from noa.cache.response import ResponseCache
from noa.cache.shared import RemoteTier
from noa.cache.tiers import Tier
from noa.config import NoaConfig
from noa.http.app import create_app
from noa.http.jobs import JobsApi
from noa.http.probes import Probes
from noa.observability import tracing as tracing_setup
from noa.observability.dependencies import DependencyChecks
from noa.observability.error_reporting import init_error_reporting
from noa.observability.logs import configure_logging
from noa.observability.metrics import Metrics, Snapshot, cache_series
from noa.observability.metrics_push import MetricsPush
from noa.observability.tracing import Tracing
from noa.providers.base import Provider
from noa.routing.health_center import HealthView, RemoteHealth
from noa.routing.registry import ModelRegistry
from noa.routing.remote import RemoteRouter
from noa.service import NoaService, RouterLike
from noa.storage.db import LazyDatabase

Environ = Mapping[str, str]


@dataclass(frozen=True)
class Placement:
    """Where a Gateway's collaborators live."""

    local: Mapping[str, Provider]  # llama.cpp providers (LlamaCpp replicas when served)
    router: RouterLike | None = None  # the Router deployment (hot_path: router); None: inline
    health: HealthView | None = None  # the app's HealthActor; None: nothing shared
    shared_tier: Tier | None = None  # the CacheActor: L2 when no Redis is configured
    shared_limiter: Limiter | None = None  # the LimiterActor: several Gateways, no Redis
    replica: str = "inprocess"


@dataclass
class GatewayParts:
    """One Gateway replica's cores; ``app()`` serves them over HTTP."""

    config: NoaConfig
    registry: ModelRegistry
    db: LazyDatabase
    service: NoaService
    access: Access
    cache: ResponseCache | None
    metrics: Metrics
    probes: Probes
    tracing: Tracing
    placement: Placement
    closing: tuple[Any, ...]  # what ``aclose`` closes first (the router's link, providers)
    push: MetricsPush | None = None
    jobs: JobsApi | None = None  # the job API (noa/build/jobs.py), when jobs are enabled
    routers: tuple[APIRouter, ...] = ()  # files and batches
    body_limits: dict[str, int] = field(default_factory=dict)  # an upload route's own limit

    def app(self) -> FastAPI:
        health = self.placement.health
        return create_app(
            self.service,
            auth=self.access.auth,
            admin=self.access.admin,
            max_body_bytes=self.config.server.max_body_bytes,
            access_log=self.config.server.access_log,
            metrics=self.metrics,
            metrics_total=self._metrics_total if health is not None else None,
            tracing=self.tracing,
            probes=self.probes,
            jobs=self.jobs,
            routers=self.routers,
            body_limits=self.body_limits,
        )

    async def _metrics_total(self) -> Snapshot:
        """Every replica's totals, this replica's latest included."""
        assert self.placement.health is not None
        replica = self.placement.replica
        return await self.placement.health.metrics(replica, self.metrics.snapshot())

    def start(self) -> None:
        if self.push is not None:
            self.push.start()

    async def aclose(self) -> None:
        """A clean shutdown: hand in the last counts, write the buffered usage, finish storing
        cache entries, close the connections."""
        if self.push is not None:
            await self.push.aclose()
        for part in self.closing:
            await part.aclose()
        await self.probes.dependencies.aclose()
        await self.access.aclose()
        if self.cache is not None:
            await self.cache.aclose()
        await self.db.close()


def gateway(
    config: NoaConfig,
    placement: Placement,
    environ: Environ | None = None,
    tracing: Tracing | None = None,
) -> GatewayParts:
    tracing = tracing or Tracing()
    registry = routing.registry(config, environ)
    db = access_build.database(config, environ)
    closing: tuple[Any, ...] = ()
    core: RouterLike
    if placement.router is not None:
        core = placement.router
    else:  # inline (measured fastest): the cloud SDK clients in this replica, no handle hop
        providers = {**cloud_providers(config, environ), **placement.local}
        if placement.health is not None:
            linked = routing.linked_router(
                config, providers, placement.health, placement.replica, tracing
            )
            core, closing = linked.router, (linked,)
        else:
            core = routing.router(config, providers, tracing=tracing)
            closing = (core,)
    cache = cache_build.response_cache(config, db, placement.shared_tier, environ)
    sources = [lambda: cache_series(cache.stats())] if cache is not None else []
    metrics = Metrics(sources=sources)
    access = access_build.build(
        config, db, metrics=metrics, shared_limiter=placement.shared_limiter, environ=environ
    )
    service = NoaService(core, registry, cache, access.accounting, tracing=tracing)
    health = placement.health
    probes = Probes(
        service,
        DependencyChecks(db, config.redis.url(environ)),
        config.deployment,
        placement.replica,
        health.snapshot if health is not None else None,
    )
    push = None
    if health is not None:
        replica = placement.replica

        async def report(snapshot: Snapshot) -> None:
            await health.report_metrics(replica, snapshot)

        push = MetricsPush(metrics, report)
    return GatewayParts(
        config, registry, db, service, access, cache, metrics, probes, tracing, placement,
        closing, push,
    )  # fmt: skip


def served(
    config: NoaConfig,
    local: Mapping[str, Any],
    router: Any,
    health: Any,
    cache: Any,
    limiter: Any | None,
    replica: str,
    limiter_prefix: str = "",
) -> GatewayParts:
    """A Gateway replica in the Serve app, its collaborators behind the deployments'
    handles; this process's logging, tracing and error reporting set up first. Requests are
    routed here (``hot_path: inline``) or by the Router deployment (``hot_path: router``);
    ``limiter_prefix``: the limiter's handle methods' (a Gateway's ``limiter_``)."""
    configure_logging()
    tracing = tracing_setup.from_environment()  # off unless an OTLP endpoint is configured
    init_error_reporting()  # Sentry, when SENTRY_DSN is set
    placement = Placement(
        local=remote_local(local),
        router=RemoteRouter(router) if config.deployment.hot_path == "router" else None,
        health=RemoteHealth(health),
        shared_tier=RemoteTier(cache),
        shared_limiter=RemoteLimiter(limiter, limiter_prefix) if limiter is not None else None,
        replica=replica,
    )
    return gateway(config, placement, tracing=tracing)


def inprocess(
    config: NoaConfig, environ: Environ | None = None, tracing: Tracing | None = None
) -> GatewayParts:
    """Everything in this process (llama.cpp included, nothing shared): for tests and tools,
    not for serving. ``parts.app()`` serves it."""
    return gateway(config, Placement(local=inprocess_local(config)), environ, tracing=tracing)


def inprocess_service(config: NoaConfig, environ: Environ | None = None) -> NoaService:
    """The service alone (no keys, limits or usage accounting), everything in this process."""
    providers = {**cloud_providers(config, environ), **inprocess_local(config)}
    db = access_build.database(config, environ)
    return NoaService(
        routing.router(config, providers),
        routing.registry(config, environ),
        cache_build.response_cache(config, db, environ=environ),
    )
