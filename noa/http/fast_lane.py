"""A direct path to NOA's hot routes, past FastAPI's routing and dependency solving.

On a Gateway at full load, FastAPI's middleware stack, route matching and dependency solving
took about a sixth of the replica's CPU per chat request (py-spy, README "Performance"). For
the routes every client calls (chat, completions, embeddings, the model list) the middleware
calls the endpoint itself when method and path match exactly. The body is read, decoded and
validated as FastAPI does it (same content-type rule, same ``RequestValidationError`` with
``body`` locations, same error rendering), so answers and errors do not change; everything
else (other routes, other methods, trailing slashes, docs) still goes through FastAPI, and the
routes stay in the OpenAPI schema.

Only routes whose endpoint takes nothing but the ``Request`` and one JSON body model, and
returns a ``Response``, can take this lane; ``lanes()`` refuses any other at start-up.
"""

from __future__ import annotations

import email.message
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.routing import BaseRoute

from noa.http.render import correlation_id, error_response

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Lane = Callable[[Scope, Receive, Send], Awaitable[None]]


def _is_json(content_type: str | None, strict: bool) -> bool:
    """FastAPI's rule: ``application/json`` or ``application/*+json``, or no content type at
    all unless the route is strict about it (FastAPI's default since 0.13x)."""
    if not content_type:
        return not strict
    if content_type == "application/json" or content_type.startswith("application/json;"):
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


async def read_model(request: Request, model: type[BaseModel], strict: bool) -> BaseModel:
    """The body as ``model``, failing exactly as FastAPI's body parameter would."""
    raw = await request.body()
    value: Any = None
    if raw:
        if _is_json(request.headers.get("content-type"), strict):
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                error = {"error": e.msg}
                raise RequestValidationError(
                    [
                        {
                            "type": "json_invalid",
                            "loc": ("body", e.pos),
                            "msg": "JSON decode error",
                            "input": {},
                            "ctx": error,
                        }
                    ]
                ) from e
        else:
            value = raw
    if value is None:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        return model.model_validate(value)
    except ValidationError as e:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in e.errors()]
        raise RequestValidationError(errors) from e


def _lane(route: APIRoute) -> Lane:
    dependant = route.dependant
    others = (
        dependant.path_params,
        dependant.query_params,
        dependant.header_params,
        dependant.cookie_params,
        dependant.dependencies,
    )
    if any(others) or len(dependant.body_params) > 1:
        raise ValueError(f"{route.path}: only a Request and one body model can take the lane")
    body_name: str | None = None
    model: type[BaseModel] | None = None
    if dependant.body_params:
        field = dependant.body_params[0]
        annotation = field.field_info.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise ValueError(f"{route.path}: the body must be one pydantic model")
        body_name, model = field.name, annotation
    endpoint = route.endpoint
    request_name = dependant.request_param_name
    strict = getattr(route, "strict_content_type", False)  # absent before FastAPI 0.13x
    strict = bool(getattr(strict, "value", strict))  # a DefaultPlaceholder holds the default

    async def lane(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = route  # what FastAPI's routing sets (the access log names the route)
        scope["endpoint"] = endpoint
        request = Request(scope, receive)
        try:
            kwargs: dict[str, Any] = {}
            if request_name is not None:
                kwargs[request_name] = request
            if body_name is not None and model is not None:
                kwargs[body_name] = await read_model(request, model, strict)
            response = await endpoint(**kwargs)
            if not isinstance(response, Response):
                raise TypeError(f"{route.path} returned {type(response).__name__}")
        except Exception as exc:
            response = error_response(exc, correlation_id(request))
        await response(scope, receive, send)

    return lane


def lanes(routes: Iterable[BaseRoute], paths: Iterable[str]) -> dict[tuple[str, str], Lane]:
    """(method, path) -> a direct call of the route's endpoint, for each of ``paths`` (the
    routes as added, before an app includes their router: included routers are not listed in
    ``app.routes`` by path)."""
    wanted = set(paths)
    found: dict[tuple[str, str], Lane] = {}
    for route in routes:
        if isinstance(route, APIRoute) and route.path in wanted:
            lane = _lane(route)
            for method in route.methods or ():
                found[(method, route.path)] = lane
    missing = wanted - {path for _, path in found}
    if missing:
        raise ValueError(f"no route for {sorted(missing)}")
    return found
