"""The FastAPI application: NOA's OpenAI-compatible HTTP API over a ``NoaService``."""

from __future__ import annotations

import importlib.util
import logging
import platform
import time
from collections.abc import Awaitable, Callable
from enum import Enum
from pathlib import Path
from typing import Any

import psutil
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import noa
from noa.errors import PermissionDeniedError
from noa.http.admin import Admin, admin_router
from noa.http.auth import MasterKey
from noa.http.dashboard import PAGE
from noa.http.dashboard_data import summarize
from noa.http.disconnect import unless_disconnected
from noa.http.fast_lane import lanes
from noa.http.middleware import ACCESS_LOGGER, GatewayMiddleware
from noa.http.render import NoaRoute, correlation_id, error_response, json_response, result_response
from noa.identity import Authenticator, Principal
from noa.metrics import CONTENT_TYPE, Metrics, Snapshot, render
from noa.service import NoaService
from noa.tracing import Tracing
from noa.wire.requests import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

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
CACHE_HEADER = "x-noa-cache"  # use | bypass | refresh

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


def _wants_usage(body: ChatCompletionRequest | CompletionRequest) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


def _asked(request: Request) -> tuple[str | None, Principal | None]:
    """The policy the request asks of the cache, and who asks (set by authentication)."""
    return request.headers.get(CACHE_HEADER), request.scope.get("state", {}).get("principal")


def _api_router(service: NoaService) -> APIRouter:
    router = APIRouter(route_class=NoaRoute)

    async def chat_completions(request: Request, body: ChatCompletionRequest) -> Response:
        answer = service.chat(body, *_asked(request))
        result = await unless_disconnected(request.receive, answer)
        return result_response(result, request, _wants_usage(body))

    async def completions(request: Request, body: CompletionRequest) -> Response:
        answer = service.completion(body, *_asked(request))
        result = await unless_disconnected(request.receive, answer)
        return result_response(result, request, _wants_usage(body))

    async def embeddings(request: Request, body: EmbeddingRequest) -> Response:
        answer = service.embeddings(body, *_asked(request))
        result = await unless_disconnected(request.receive, answer)
        return result_response(result, request, False)

    async def list_models() -> Response:
        return json_response(service.list_models())

    async def get_model(model_id: str) -> Response:
        return json_response(service.get_model(model_id))

    # (path, handler, method, summary); each /v1 route may have a seed-architecture alias.
    routes: list[tuple[str, Callable[..., Any], str, str, str | None]] = [
        ("/v1/chat/completions", chat_completions, "POST", "Create a chat completion (JSON or SSE)",
         "/api/v1/inference/chat"),
        ("/v1/completions", completions, "POST", "Create a text completion (JSON or SSE)", None),
        ("/v1/embeddings", embeddings, "POST", "Create embeddings", "/api/v1/inference/embeddings"),
        ("/v1/models", list_models, "GET", "List models", "/api/v1/models"),
        ("/v1/models/{model_id:path}", get_model, "GET", "Retrieve a model",
         "/api/v1/models/{model_id:path}"),
    ]  # fmt: skip
    openai_tags: list[str | Enum] = ["OpenAI API"]
    seed_tags: list[str | Enum] = ["Seed API aliases"]
    for path, handler, method, summary, alias in routes:
        router.add_api_route(path, handler, methods=[method], tags=openai_tags, summary=summary)
        if alias:
            router.add_api_route(
                alias,
                handler,
                methods=[method],
                tags=seed_tags,
                summary=f"Alias of {path.replace(':path', '')}",
                operation_id=f"seed_{handler.__name__}",
            )
    return router


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
) -> FastAPI:
    """The ASGI app: FastAPI routes behind NOA's middleware.

    ``auth`` decides who may call (built from ``master_key`` alone when not given; neither:
    open); ``admin`` adds the key, team and usage APIs (``/v1/admin/...``, ``/v1/usage``);
    ``fast_lane`` serves the hot routes past FastAPI's routing (off only to compare);
    ``metrics`` counts every request, and ``GET /metrics`` shows ``metrics_total()`` (every
    replica's totals) or, without it, this process's own; ``/dashboard`` shows them live, with
    ``providers_health()`` (the latest probes) when given; ``tracing`` starts each request's
    root span."""
    app = FastAPI(
        title="NOA",
        version=noa.__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
    )
    api = _api_router(service)
    app.include_router(api)
    if admin is not None:
        app.include_router(admin_router(admin))

    async def health() -> Response:
        return json_response({"status": "ok"})

    app.add_api_route("/health", health, methods=["GET"], tags=["Health"], summary="Liveness")
    _process_probes(app)
    if metrics is not None:
        _metrics_routes(app, metrics, metrics_total, providers_health)
    _docs(app)

    async def http_error(request: Request, exc: Exception) -> Response:
        return error_response(exc, correlation_id(request))

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, http_error)

    if auth is None and master_key:
        auth = Authenticator(master=MasterKey(master_key))
    if auth is not None and auth.enabled:
        _declare_bearer_auth(app)
    app.add_middleware(
        GatewayMiddleware,
        auth=auth,
        max_body_bytes=max_body_bytes,
        access_log=logging.getLogger(ACCESS_LOGGER) if access_log else None,
        lanes=lanes([*api.routes, *app.routes], HOT_PATHS) if fast_lane else None,
        metrics=metrics,
        tracing=tracing,
    )
    return app


def _process_probes(app: FastAPI) -> None:
    """Liveness, start-up and this process's own vitals: cheap, and never call a model."""
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

    for path, handler, summary in (
        ("/health/live", live, "Liveness (the process answers)"),
        ("/health/startup", startup, "Start-up finished (this replica serves)"),
        ("/health/detailed", detailed, "This replica's uptime, memory and CPU"),
    ):
        app.add_api_route(path, handler, methods=["GET"], tags=["Health"], summary=summary)


def _metrics_routes(
    app: FastAPI,
    metrics: Metrics,
    total: Callable[[], Awaitable[Snapshot]] | None,
    providers: Callable[[], Awaitable[dict[str, Any]]] | None,
) -> None:
    """``/metrics`` (Prometheus), ``/dashboard`` (the page) and ``/v1/dashboard`` (its data)."""

    async def snapshot() -> Snapshot:
        return await total() if total is not None else metrics.snapshot()

    async def scrape() -> Response:
        return Response(render(await snapshot()), media_type=CONTENT_TYPE)

    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"cache-control": "no-store"})

    async def data(request: Request) -> Response:
        principal = request.scope.get("state", {}).get("principal")
        if principal is not None and not principal.admin:
            raise PermissionDeniedError(
                "The dashboard needs the master key or a key with the admin scope",
                code="admin_required",
            )
        health = await providers() if providers is not None else {}
        return json_response(summarize(await snapshot(), health))

    app.add_api_route(
        "/metrics",
        scrape,
        methods=["GET"],
        tags=["Health"],
        summary="Prometheus metrics: the totals of every Gateway replica",
    )
    app.add_api_route("/dashboard", page, methods=["GET"], include_in_schema=False)
    app.router.routes.append(
        NoaRoute("/v1/dashboard", data, methods=["GET"], tags=["Health"], summary="Dashboard data")
    )


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
