"""The probes: cheap, never calling a model.

Of this process: ``/health`` and ``/health/live`` (it answers), ``/health/startup`` (it
serves), ``/health/detailed`` (uptime, memory, CPU). Of the app, when a ``Probes`` is given:
``/health/ready`` (the database, Redis when configured, and a provider that can answer every
model; 503 naming the failing checks), ``/health/providers`` (the latest active probe, the
shared breakers and the traffic of each provider), ``/health/cache`` (this replica's response
cache) and ``/status`` (version, deployments, models, providers, breakers, dependencies).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psutil
from fastapi import FastAPI, Response

import noa
from noa.config import DeploymentConfig
from noa.http.render import json_response
from noa.observability.dependencies import DependencyChecks
from noa.routing.health import readiness
from noa.service import NoaService

Snapshot = Callable[[], Awaitable[dict[str, Any]]]
Handler = Callable[[], Awaitable[Response]]


@dataclass
class Probes:
    """What the app probes read: the service (its registry and cache), the shared health
    snapshot (the HealthActor's, when there is one), the dependency checks and the
    deployment's shape."""

    service: NoaService
    dependencies: DependencyChecks
    deployment: DeploymentConfig
    replica: str
    health: Snapshot | None = None

    async def shared(self) -> dict[str, Any]:
        """The shared health snapshot (empty when nothing is shared)."""
        return await self.health() if self.health is not None else {}

    def cache_stats(self) -> dict[str, Any]:
        """This replica's response cache counters ({"enabled": false} when it is off)."""
        cache = self.service.cache
        return {"enabled": True, **cache.stats()} if cache is not None else {"enabled": False}

    async def providers(self) -> dict[str, Any]:
        """The latest active probe of each provider (the dashboard shows them)."""
        providers: dict[str, Any] = (await self.shared()).get("providers", {})
        return providers

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        is_ready, body = readiness(self.service.registry, await self.shared())
        body["dependencies"] = await self.dependencies.check()
        up = all(d["status"] == "ok" for d in body["dependencies"].values())
        if not up:
            body["status"] = "not_ready"
        return is_ready and up, body

    async def status(self) -> dict[str, Any]:
        shared = await self.shared()
        d = self.deployment
        return {
            "version": noa.__version__,
            "replica": self.replica,
            "deployments": {
                "gateway": d.gateway.model_dump(mode="json"),
                "router": d.router.model_dump(mode="json"),
                "llamacpp": d.llamacpp.model_dump(mode="json"),
                "hot_path": d.hot_path,
            },
            "models": [m["id"] for m in self.service.list_models()["data"]],
            "providers": shared.get("providers", {}),
            "breakers": shared.get("breakers", {}),
            "dependencies": await self.dependencies.check(),
        }


def _routes(app: FastAPI, routes: list[tuple[str, Handler, str]]) -> None:
    for path, handler, summary in routes:
        app.add_api_route(path, handler, methods=["GET"], tags=["Health"], summary=summary)


def add_process_probes(app: FastAPI) -> None:
    """Liveness, start-up and this process's own vitals."""
    started = time.time()
    process = psutil.Process()
    process.cpu_percent()  # the first reading is meaningless: prime it

    async def live() -> Response:
        return json_response({"status": "ok"})

    async def startup() -> Response:
        return json_response({"status": "started", "started_at": started})

    async def detailed() -> Response:
        with process.oneshot():
            memory = process.memory_info()
            body = {
                "status": "ok",
                "version": noa.__version__,
                "uptime_s": round(time.time() - started, 3),
                "pid": process.pid,
                "memory": {"rss_bytes": memory.rss, "vms_bytes": memory.vms},
                "cpu": {"percent": process.cpu_percent(), "threads": process.num_threads()},
                "python": platform.python_version(),
            }
        return json_response(body)

    _routes(
        app,
        [
            ("/health", live, "Liveness"),
            ("/health/live", live, "Liveness (the process answers)"),
            ("/health/startup", startup, "Start-up finished (this replica serves)"),
            ("/health/detailed", detailed, "This replica's uptime, memory and CPU"),
        ],
    )


def add_app_probes(app: FastAPI, probes: Probes) -> None:
    """The probes of the whole app (see the module's docstring)."""

    async def cache() -> Response:
        return json_response(probes.cache_stats())

    async def providers() -> Response:
        return json_response(await probes.shared())

    async def status() -> Response:
        return json_response(await probes.status())

    async def ready() -> Response:
        is_ready, body = await probes.ready()
        return json_response(body, 200 if is_ready else 503)

    _routes(
        app,
        [
            (
                "/health/cache",
                cache,
                "This replica's response cache: answers by outcome; hits/misses per tier",
            ),
            (
                "/health/providers",
                providers,
                "Latest active probe, shared breakers and traffic of each provider",
            ),
            (
                "/status",
                status,
                "Version, deployments, replicas, models, providers and breaker states",
            ),
            (
                "/health/ready",
                ready,
                "Ready when the database (and Redis, when configured) answers and every model"
                " has a provider that can answer (503 with the failing checks otherwise)",
            ),
        ],
    )
