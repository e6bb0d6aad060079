"""GatewayMiddleware as plain ASGI: auth, body limit, correlation ids and the access-log line."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from clocks import ManualClock

from noa.access.identity import Authenticator, MasterKey
from noa.http.middleware import ACCESS_LOGGER, GatewayMiddleware, error_category
from noa.observability.metrics import Metrics

Message = dict[str, Any]


class Clock(ManualClock):
    start = 50.0


class Route:
    path = "/v1/chat/completions"


def app_answering(clock: Clock, status: int = 200) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["route"] = Route()
        await receive()
        clock.now += 0.0125
        headers = [(b"x-noa-provider", b"openai"), (b"x-noa-model", b"gpt-x")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


async def call(middleware: GatewayMiddleware, headers: list[tuple[bytes, bytes]]) -> list[Message]:
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    return sent


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == ACCESS_LOGGER]


async def test_one_access_line_per_request_with_route_status_and_provider(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    middleware = GatewayMiddleware(
        app_answering(clock),
        auth=Authenticator(master=MasterKey("sk-master")),
        max_body_bytes=1000,
        access_log=logging.getLogger(ACCESS_LOGGER),
        clock=clock,
    )
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    auth = (b"authorization", b"Bearer sk-master")
    sent = await call(middleware, [auth, (b"x-correlation-id", b"req-1")])
    assert sent[0]["status"] == 200
    assert (b"x-correlation-id", b"req-1") in sent[0]["headers"]
    (line,) = records(caplog)
    fields = line.__dict__
    assert fields["correlation_id"] == "req-1"
    assert fields["route"] == "/v1/chat/completions"
    assert fields["status"] == 200 and fields["method"] == "POST"
    assert fields["duration_ms"] == pytest.approx(12.5)
    assert fields["provider"] == "openai" and fields["model"] == "gpt-x"
    assert "sk-master" not in line.getMessage() + repr(fields)


async def test_refused_requests_are_logged_too_and_logging_can_be_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    logged = GatewayMiddleware(
        app_answering(clock),
        auth=Authenticator(master=MasterKey("sk-master")),
        max_body_bytes=1000,
        access_log=logging.getLogger(ACCESS_LOGGER),
        clock=clock,
    )
    sent = await call(logged, [(b"authorization", b"Bearer wrong")])
    assert sent[0]["status"] == 401
    error = orjson.loads(sent[1]["body"])["error"]
    (line,) = records(caplog)
    assert line.__dict__["status"] == 401 and line.__dict__["route"] == "unmatched"
    assert line.__dict__["correlation_id"] == error["correlation_id"]

    quiet = GatewayMiddleware(app_answering(clock), auth=None, max_body_bytes=1000, access_log=None)
    sent = await call(quiet, [])
    assert sent[0]["status"] == 200 and len(records(caplog)) == 1


async def test_every_request_is_counted_by_route_status_and_category() -> None:
    clock = Clock()
    metrics = Metrics()
    middleware = GatewayMiddleware(
        app_answering(clock),
        auth=Authenticator(master=MasterKey("sk-master")),
        max_body_bytes=1000,
        metrics=metrics,
        clock=clock,
    )
    assert (await call(middleware, [(b"authorization", b"Bearer sk-master")]))[0]["status"] == 200
    assert (await call(middleware, [(b"authorization", b"Bearer wrong")]))[0]["status"] == 401
    snapshot = metrics.snapshot()
    assert snapshot["http_requests_total"] == {
        ("POST", "/v1/chat/completions", "200"): 1,
        ("POST", "unmatched", "401"): 1,  # refused before routing
    }
    assert snapshot["http_errors_total"] == {("POST", "unmatched", "client"): 1}
    duration = snapshot["http_request_duration_seconds"][("POST", "/v1/chat/completions")]
    assert isinstance(duration, list) and duration[-2:] == [0.0, pytest.approx(0.0125)]
    assert snapshot["http_active_connections"] == {(): 0}
    assert [error_category(s) for s in (404, 429, 500, 502, 503, 504)] == [
        "client", "client", "server", "external", "server", "external"
    ]  # fmt: skip
