"""The OpenAI API's routes: one per operation (its request model from ``noa.wire``), and the
model list. Each ``/v1`` route may have an alias from the seed architecture (``/api/v1/...``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from noa.access.identity import Principal
from noa.http.disconnect import unless_disconnected
from noa.http.render import NoaRoute, json_response, result_response
from noa.service import NoaService, include_usage
from noa.wire.operations import REQUEST_MODELS, Operation
from noa.wire.requests import dump

CACHE_HEADER = "x-noa-cache"  # use | bypass | refresh


@dataclass(frozen=True)
class OperationRoute:
    operation: Operation
    path: str
    summary: str
    name: str  # the endpoint's name: OpenAPI operation ids are made of it
    alias: str | None = None


OPERATION_ROUTES = (
    OperationRoute(
        Operation.CHAT,
        "/v1/chat/completions",
        "Create a chat completion (JSON or SSE)",
        "chat_completions",
        "/api/v1/inference/chat",
    ),
    OperationRoute(
        Operation.COMPLETIONS,
        "/v1/completions",
        "Create a text completion (JSON or SSE)",
        "completions",
    ),
    OperationRoute(
        Operation.EMBEDDINGS,
        "/v1/embeddings",
        "Create embeddings",
        "embeddings",
        "/api/v1/inference/embeddings",
    ),
)


def _asked(request: Request) -> tuple[str | None, Principal | None]:
    """The policy the request asks of the cache, and who asks (set by authentication)."""
    return request.headers.get(CACHE_HEADER), request.scope.get("state", {}).get("principal")


def _endpoint(service: NoaService, route: OperationRoute) -> Callable[..., Any]:
    operation = route.operation

    async def endpoint(request: Request, body: BaseModel) -> Response:
        validated = dump(body)
        answer = service.answer(operation, validated, *_asked(request))
        result = await unless_disconnected(request.receive, answer)
        return result_response(result, request, include_usage(validated))

    # FastAPI reads the body's model from the annotation: the operation's own request model
    endpoint.__annotations__ = {**endpoint.__annotations__, "body": REQUEST_MODELS[operation]}
    endpoint.__name__ = endpoint.__qualname__ = route.name
    return endpoint


def openai_router(service: NoaService) -> APIRouter:
    router = APIRouter(route_class=NoaRoute)

    async def list_models(request: Request) -> Response:
        return json_response(service.list_models(_asked(request)[1]))

    async def get_model(request: Request, model_id: str) -> Response:
        return json_response(service.get_model(model_id, _asked(request)[1]))

    # (path, handler, method, summary, seed-architecture alias)
    routes: list[tuple[str, Callable[..., Any], str, str, str | None]] = [
        (r.path, _endpoint(service, r), "POST", r.summary, r.alias) for r in OPERATION_ROUTES
    ]
    routes += [
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
