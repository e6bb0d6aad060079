"""The probes: cheap, never calling a model.

Of this process: ``/health`` and ``/health/live`` (it answers), ``/health/startup`` (it
serves), ``/health/detailed`` (uptime, memory, CPU). Of the app, when a ``Probes`` is given:
``/health/ready`` (the database, Redis when configured, and a provider that can answer every
model; 503 naming the failing checks), ``/health/providers`` (the latest active probe, the
shared breakers and the traffic of each provider), ``/health/cache`` (this replica's response
cache) and ``/status`` (version, deployments, models, providers, breakers, dependencies).

``/health/ready``, ``/health/providers`` and ``/status`` need no credential, so they answer
anyone with their status code and the names and states of what they check (``ok``,
``down``, ``open``...); the rest (error text naming hosts and users, probe latencies, traffic,
sizing) only to an admin (the master key or an admin-scoped key, as the admin routes), or to
everyone when auth is off (no master key: local development).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil
from fastapi import FastAPI, Request, Response

import noa
from noa.access.identity import Authenticator
from noa.config import DeploymentConfig
from noa.http.auth import credential_from_headers
from noa.http.render import json_response
from noa.observability.dependencies import DependencyChecks
from noa.routing.health import readiness
from noa.service import NoaService

Snapshot = Callable[[], Awaitable[dict[str, Any]]]
Handler = Callable[..., Awaitable[Response]]
Viewer = Callable[[Request], Awaitable[bool]]  # may this request see the details?
Body = dict[str, Any]


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
        shared = await self.shared()
        is_ready, body = readiness(self.service.registry, shared)
        body["dependencies"] = await self.dependencies.check()
        # a bridge's broker being away does not make the HTTP API unready: it is shown here
        body["bridges"] = shared.get("bridges", {})
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
            "bridges": shared.get("bridges", {}),
            "dependencies": await self.dependencies.check(),
        }


def _states(entries: Mapping[str, Mapping[str, Any]], field: str = "status") -> Body:
    """Each entry's name and state only."""
    return {name: {field: entry.get(field)} for name, entry in entries.items()}


def public_ready(body: Body) -> Body:
    """``/health/ready`` for anyone: readiness, each model's availability, and the state of
    each provider and dependency (no error text, latencies or upstream names)."""
    return {
        "status": body["status"],
        "models": body["models"],
        "providers": _states(body["providers"]),
        "dependencies": _states(body["dependencies"]),
        "bridges": _states(body.get("bridges", {})),
    }


def public_shared(shared: Body) -> Body:
    """``/health/providers`` for anyone: each provider's probe state and each breaker's."""
    if not shared:
        return {}
    return {
        "providers": _states(shared.get("providers", {})),
        "breakers": _states(shared.get("breakers", {}), "state"),
    }


def public_status(body: Body) -> Body:
    """``/status`` for anyone: which NOA answered and the states it knows (no sizing, no
    error text)."""
    return {
        "version": body["version"],
        "replica": body["replica"],
        "models": body["models"],
        "providers": _states(body["providers"]),
        "breakers": _states(body["breakers"], "state"),
        "bridges": _states(body.get("bridges", {})),
        "dependencies": _states(body["dependencies"]),
    }


def admin_viewer(auth: Authenticator | None) -> Viewer:
    """Whether a probe's caller may see the details: an admin credential (the same check as
    the admin routes), or anyone when auth is off."""

    async def sees_details(request: Request) -> bool:
        if auth is None or not auth.enabled:
            return True  # no master key (local development): nothing to guard
        presented = credential_from_headers(
            request.headers.get("authorization"), request.headers.get("x-api-key")
        )
        if presented is None:
            return False
        try:
            return (await auth.authenticate(presented)).admin
        except Exception:  # a wrong key, or keys unreadable: the public answer, same status
            return False

    return sees_details


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


def add_app_probes(app: FastAPI, probes: Probes, auth: Authenticator | None = None) -> None:
    """The probes of the whole app (see the module's docstring); ``auth`` tells an admin, who
    sees the details (None: auth is off, everyone does)."""
    sees_details = admin_viewer(auth)

    async def cache() -> Response:
        return json_response(probes.cache_stats())

    async def providers(request: Request) -> Response:
        shared = await probes.shared()
        return json_response(shared if await sees_details(request) else public_shared(shared))

    async def status(request: Request) -> Response:
        body = await probes.status()
        return json_response(body if await sees_details(request) else public_status(body))

    async def ready(request: Request) -> Response:
        is_ready, body = await probes.ready()
        shown = body if await sees_details(request) else public_ready(body)
        return json_response(shown, 200 if is_ready else 503)

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
