"""The FastAPI application: NOA's OpenAI-compatible HTTP API over a ``NoaService``."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import noa
from noa.access.identity import Authenticator, MasterKey
from noa.http.admin import Admin, admin_router
from noa.http.dashboard import add_metrics_routes
from noa.http.fast_lane import lanes
from noa.http.jobs import JobsApi, jobs_router
from noa.http.middleware import ACCESS_LOGGER, GatewayMiddleware
from noa.http.openai import openai_router
from noa.http.probes import Probes, add_app_probes, add_process_probes
from noa.http.render import correlation_id, error_response
from noa.http.schedules import schedules_router
from noa.observability.metrics import Metrics, Snapshot
from noa.observability.tracing import Tracing
from noa.service import NoaService

DOCS_ASSETS = "/_noa/docs-assets"
# The routes every client calls: served past FastAPI's routing (noa/http/fast_lane.py).
HOT_PATHS = (
    "/v1/chat/completions",
    "/api/v1/inference/chat",
    "/v1/completions",
    "/v1/embeddings",
    "/api/v1/inference/embeddings",
    "/v1/models",
    "/api/v1/models",
    "/health",
)

DESCRIPTION = """OpenAI-compatible gateway over OpenAI, Anthropic and local GGUF models.

When the server has a master key (`NOA_MASTER_KEY`), every `/v1` and `/api/v1` route needs
`Authorization: Bearer <key>`. Errors are OpenAI-shaped: `{"error": {"message", "type", "param",
"code", "category", "correlation_id"}}`.
"""


def _swagger_assets() -> Path | None:
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "static"
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def _docs(app: FastAPI) -> None:
    assets = _swagger_assets()
    if assets is not None:
        app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    def swagger(request: Request) -> HTMLResponse:
        kwargs: dict[str, Any] = {}
        if assets is not None:
            kwargs = {
                "swagger_js_url": f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                "swagger_css_url": f"{DOCS_ASSETS}/swagger-ui.css",
                "swagger_favicon_url": f"{DOCS_ASSETS}/favicon.png",
            }
        return get_swagger_ui_html(openapi_url="/openapi.json", title="NOA API", **kwargs)

    for path in ("/docs", "/api-docs"):
        app.add_api_route(path, swagger, methods=["GET"], include_in_schema=False)


def create_app(
    service: NoaService,
    *,
    master_key: str | None = None,
    auth: Authenticator | None = None,
    admin: Admin | None = None,
    max_body_bytes: int = 10 * 1024 * 1024,
    access_log: bool = True,
    fast_lane: bool = True,
    metrics: Metrics | None = None,
    metrics_total: Callable[[], Awaitable[Snapshot]] | None = None,
    providers_health: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    tracing: Tracing | None = None,
    probes: Probes | None = None,
    jobs: JobsApi | None = None,
    routers: Sequence[APIRouter] = (),
    body_limits: Mapping[str, int] | None = None,
) -> FastAPI:
    """The ASGI app: FastAPI routes behind NOA's middleware.

    ``auth`` decides who may call (built from ``master_key`` alone when not given; neither:
    open); ``admin`` adds the key, team and usage APIs (``/v1/admin/...``, ``/v1/usage``);
    ``fast_lane`` serves the hot routes past FastAPI's routing (off only to compare);
    ``metrics`` counts every request, and ``GET /metrics`` shows ``metrics_total()`` (every
    replica's totals) or, without it, this process's own; ``/dashboard`` shows them live, with
    ``providers_health()`` (the latest probes) when given; ``tracing`` starts each request's
    root span; ``probes`` adds the app's probes (``/health/ready``, ``/status``, ...); ``jobs``
    adds the job API and the admin schedules; ``routers`` more routes (files and batches), and
    ``body_limits`` their paths' own body limits (an upload's)."""
    if auth is None and master_key:
        auth = Authenticator(master=MasterKey(master_key))
    app = FastAPI(
        title="NOA",
        version=noa.__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
    )
    api = openai_router(service)
    app.include_router(api)
    if admin is not None:
        app.include_router(admin_router(admin))
    if jobs is not None:
        app.include_router(jobs_router(jobs))
        app.include_router(schedules_router(jobs))
    for router in routers:
        app.include_router(router)
    add_process_probes(app)
    if metrics is not None:
        health = providers_health or (probes.providers if probes is not None else None)
        add_metrics_routes(app, metrics, metrics_total, health)
    _docs(app)
    if probes is not None:
        add_app_probes(app, probes, auth)

    async def http_error(request: Request, exc: Exception) -> Response:
        return error_response(exc, correlation_id(request))

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, http_error)

    if auth is not None and auth.enabled:
        _declare_bearer_auth(app)
    app.add_middleware(
        GatewayMiddleware,
        auth=auth,
        max_body_bytes=max_body_bytes,
        body_limits=body_limits,
        access_log=logging.getLogger(ACCESS_LOGGER) if access_log else None,
        lanes=lanes([*api.routes, *app.routes], HOT_PATHS) if fast_lane else None,
        metrics=metrics,
        tracing=tracing,
    )
    return app


def _declare_bearer_auth(app: FastAPI) -> None:
    """Show the bearer scheme in OpenAPI (auth itself is enforced by the middleware)."""
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = base_openapi()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            for path, ops in schema.get("paths", {}).items():
                if path.startswith(("/v1/", "/api/v1/")):
                    for op in ops.values():
                        op["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
