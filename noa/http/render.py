"""Turning results and errors into HTTP responses (JSON and SSE), in one place."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import StreamingResponse

from noa import context
from noa.errors import (
    InvalidRequestError,
    MethodNotAllowedError,
    NoaError,
    NotFoundError,
    PayloadTooLargeError,
)
from noa.routing.router import PrimedStream, Routed
from noa.service import client_chunks
from noa.wire import sse
from noa.wire.validation import validation_error

logger = logging.getLogger("noa.http")

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def correlation_id(request: Request) -> str:
    return getattr(request.state, "correlation_id", None) or context.current() or ""


_KEPT = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_safe(headers: Mapping[str, str]) -> dict[str, str]:
    """Header values as HTTP carries them: printable ASCII as it is, anything else (a model
    name in another script, a control character) percent-encoded as UTF-8."""
    return {
        name: value if value.isascii() and value.isprintable() else quote(value, safe=_KEPT)
        for name, value in headers.items()
    }


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def as_noa_error(exc: BaseException, cid: str) -> NoaError:
    """Any exception as the NoaError a client sees; unexpected ones are logged, not shown."""
    if isinstance(exc, NoaError):
        return exc
    if isinstance(exc, RequestValidationError):
        return validation_error(list(exc.errors()))
    if isinstance(exc, StarletteHTTPException):
        if isinstance(exc.__cause__, NoaError):  # raised while FastAPI read the body (413)
            return exc.__cause__
        if exc.status_code == 404:
            return NotFoundError("Unknown request URL. See /docs for the API.", code="unknown_url")
        if exc.status_code == 405:
            return MethodNotAllowedError("Method not allowed for this URL. See /docs.")
        if exc.status_code == 413:
            return PayloadTooLargeError(str(exc.detail))
        return InvalidRequestError(str(exc.detail))
    logger.error("unhandled error", exc_info=exc, extra={"correlation_id": cid, "event": "error"})
    return NoaError(
        f"The server had an error while processing your request (correlation id {cid}).",
        code="internal_error",
    )


def error_response(exc: BaseException, cid: str) -> Response:
    error = as_noa_error(exc, cid)
    if error.status_code >= 500:
        logger.warning(
            "request failed: %s", error.message, extra={"correlation_id": cid, "event": "error"}
        )
    return json_response(error.to_dict(cid), error.status_code, error.headers())


async def sse_events(
    stream: PrimedStream, with_usage: bool, cid: str
) -> AsyncGenerator[bytes, None]:
    """SSE frames ending in ``[DONE]``; a failure mid-stream ends with an error event instead."""
    try:
        async with aclosing(client_chunks(stream, with_usage)) as chunks:
            async for chunk in chunks:
                yield sse.encode(chunk)
        yield sse.DONE
    except Exception as exc:
        yield sse.encode(as_noa_error(exc, cid).to_dict(cid))


def result_response(result: Routed | PrimedStream, request: Request, with_usage: bool) -> Response:
    if isinstance(result, Routed):
        return json_response(result.body, headers=header_safe(result.info.headers()))
    return StreamingResponse(
        sse_events(result, with_usage, correlation_id(request)),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **header_safe(result.info.headers())},
    )


class NoaRoute(APIRoute):
    """An APIRoute whose failures (validation included) become OpenAI-shaped errors."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return error_response(exc, correlation_id(request))

        return route
