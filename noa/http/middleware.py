"""One pure-ASGI middleware for what every request needs before routing.

Correlation id (accepted or generated, echoed as a header), authentication on protected
prefixes (the master key, API keys, JWTs; the principal goes to ``scope["state"]``), the body
size limit (Content-Length checked up front, chunked bodies counted as they arrive), and one
access-log line per request once its response is over. Pure ASGI rather than
``BaseHTTPMiddleware``, which buffers and breaks streaming.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import orjson
from opentelemetry.trace import Status, StatusCode

from noa import context
from noa.access.identity import Authenticator
from noa.errors import AuthenticationError, NoaError, PayloadTooLargeError
from noa.http.auth import credential_from_headers
from noa.observability.metrics import Metrics
from noa.observability.tracing import Tracing

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROTECTED_PREFIXES = ("/v1/", "/api/v1/")


async def send_error(send: Send, error: NoaError, correlation_id: str) -> None:
    body = orjson.dumps(error.to_dict(correlation_id))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (context.CORRELATION_HEADER.encode(), correlation_id.encode()),
    ]
    headers += [(k.encode(), v.encode()) for k, v in error.headers().items()]
    if isinstance(error, AuthenticationError):
        headers.append((b"www-authenticate", b'Bearer realm="noa"'))
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


ACCESS_LOGGER = "noa.access"
_LOGGED_HEADERS = {
    b"x-noa-provider": "provider",
    b"x-noa-model": "model",
    b"x-noa-cache": "cache",
    b"x-noa-attempts": "attempts",
}


class _Outcome:
    """What the access log reports about a response, filled in as it is sent."""

    __slots__ = ("fields", "status")

    def __init__(self) -> None:
        self.status = 0
        self.fields: dict[str, str] = {}


class GatewayMiddleware:
    """Correlation id, auth and body limit, in that order; then the access-log line."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: Authenticator | None,
        max_body_bytes: int,
        body_limits: Mapping[str, int] | None = None,
        access_log: logging.Logger | None = None,
        lanes: Mapping[tuple[str, str], ASGIApp] | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.app = app
        self.lanes = lanes or {}
        self.metrics = metrics
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        self.auth = auth
        self.max_body_bytes = max_body_bytes
        self.body_limits = dict(body_limits or {})  # a path's own limit (file uploads)
        self.access_log = access_log
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = dict(scope["headers"])
        raw_id = headers.get(b"x-correlation-id")
        cid = context.accept_or_new(raw_id.decode("latin-1") if raw_id else None)
        context.correlation_id_var.set(cid)
        scope.setdefault("state", {})["correlation_id"] = cid
        if self.tracing is not None:
            await self._traced(scope, receive, send, headers, cid, self.tracing)
            return
        await self._observed(scope, receive, send, headers, cid)

    async def _traced(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[bytes, bytes],
        cid: str,
        tracing: Tracing,
    ) -> None:
        """The request's root span around everything else (see ``noa/observability/tracing.py``)."""
        method: str = scope["method"]
        parent = headers.get(b"traceparent")
        status = 500

        async def spy(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracing.request(
            method,
            cid,
            parent.decode("latin-1") if parent else None,
            **{"http.request.method": method, "url.path": route_path(scope)},
        ) as span:
            try:
                await self._observed(scope, receive, spy, headers, cid)
            finally:
                if span is not None:
                    route = getattr(scope.get("route"), "path", None) or "unmatched"
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))

    async def _observed(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[bytes, bytes],
        cid: str,
    ) -> None:
        logged = self.access_log is not None and self.access_log.isEnabledFor(logging.INFO)
        metrics = self.metrics
        if not logged and metrics is None:
            await self._handle(scope, receive, send, headers, cid, None)
            return
        started = self.clock()
        outcome = _Outcome()
        if metrics is not None:
            metrics["http_active_connections"].inc()
        try:
            await self._handle(scope, receive, send, headers, cid, outcome)
        finally:
            elapsed = self.clock() - started
            if metrics is not None:
                metrics["http_active_connections"].inc(amount=-1)
                _count(metrics, scope, outcome, elapsed)
            if logged:
                assert self.access_log is not None
                _log(self.access_log, scope, cid, outcome, elapsed)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[bytes, bytes],
        cid: str,
        outcome: _Outcome | None,
    ) -> None:
        if outcome is not None:
            send = _observed(send, outcome)  # also sees the errors sent below
        path = route_path(scope)
        if self.auth is not None and path.startswith(PROTECTED_PREFIXES):
            auth = headers.get(b"authorization")
            api_key = headers.get(b"x-api-key")
            presented = credential_from_headers(
                auth.decode("latin-1") if auth else None,
                api_key.decode("latin-1") if api_key else None,
            )
            try:
                principal = await self.auth.authenticate(presented)
            except AuthenticationError as e:
                await send_error(send, e, cid)
                return
            scope["state"]["principal"] = principal

        limit = self.body_limits.get(path, self.max_body_bytes)
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await send_error(send, self._too_large(limit), cid)
            return

        header = (context.CORRELATION_HEADER.encode(), cid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise self._too_large(limit)
            return message

        target = self.lanes.get((scope["method"], path), self.app)  # see fast_lane.py
        await target(scope, counted_receive, send_with_id)

    @staticmethod
    def _too_large(limit: int) -> PayloadTooLargeError:
        return PayloadTooLargeError(f"Request body is larger than the limit of {limit} bytes")


def route_path(scope: Scope) -> str:
    """The path the app routes on: without the ``root_path`` a Serve route prefix (or a proxy)
    puts in front, so ``/prefix/v1/...`` is guarded like ``/v1/...``."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :] or "/"
    return path


def _observed(send: Send, outcome: _Outcome) -> Send:
    async def observed(message: Message) -> None:
        if message["type"] == "http.response.start":
            outcome.status = message["status"]
            for name, value in message.get("headers", ()):
                field = _LOGGED_HEADERS.get(name)
                if field is not None:
                    outcome.fields[field] = value.decode("latin-1")
        await send(message)

    return observed


def error_category(status: int) -> str:
    """NOA's error categories by status: 4xx the client's, 502/504 a provider's, else ours."""
    if status < 500:
        return "client"
    return "external" if status in (502, 504) else "server"


def _count(metrics: Metrics, scope: Scope, outcome: _Outcome, elapsed: float) -> None:
    route = scope.get("route")
    path = getattr(route, "path", None) or "unmatched"
    method: str = scope["method"]
    status = outcome.status or 500
    metrics["http_requests_total"].inc((method, path, str(status)))
    metrics["http_request_duration_seconds"].observe((method, path), elapsed)
    if status >= 400:
        metrics["http_errors_total"].inc((method, path, error_category(status)))


def _log(logger: logging.Logger, scope: Scope, cid: str, outcome: _Outcome, elapsed: float) -> None:
    route = scope.get("route")
    extra: dict[str, Any] = {
        "correlation_id": cid,
        "method": scope["method"],
        "route": getattr(route, "path", None) or "unmatched",
        "status": outcome.status or 500,
        "duration_ms": round(elapsed * 1000, 3),
        **outcome.fields,
    }
    logger.info("request", extra=extra)
