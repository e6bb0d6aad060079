"""``GET /metrics`` (Prometheus) and ``GET /dashboard``: a live page served by NOA itself (no
CDN: inline CSS and JS).

The page holds no data. It polls ``GET /v1/dashboard`` (behind auth like every ``/v1`` route,
and for admins only: the master key or an admin-scoped key) every two seconds; when auth is on
it first asks for a key, kept in the tab's ``sessionStorage`` only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse

from noa.errors import PermissionDeniedError
from noa.http.dashboard_data import summarize
from noa.http.render import NoaRoute, json_response
from noa.observability.metrics import CONTENT_TYPE, Metrics, Snapshot, render

PAGE = (Path(__file__).parent / "static" / "dashboard.html").read_text(encoding="utf-8")


def add_metrics_routes(
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
