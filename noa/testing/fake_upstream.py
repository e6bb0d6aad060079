"""A fake upstream that speaks the OpenAI and Anthropic wire protocols over loopback HTTP.

Tests and benchmarks drive NOA's real provider clients (the official SDKs) against it. By default
it answers deterministically ("echo: <last user text>"); ``script`` queues one-off behaviours
(an error status, a delay, a stream cut after N events) applied to the next requests in order.
Every request is recorded with its headers and JSON body.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from noa.testing import fake_replies as replies
from noa.testing.server import ServerThread

Endpoint = Callable[[Request], Awaitable[Response]]
PREAMBLE = b'"delta": {"role": "assistant", "content": ""}'  # OpenAI's first chunk


@dataclass
class Step:
    """One scripted behaviour for the next matching request."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    cut_after: int | None = None  # stream: close the connection after N events
    raw: bytes | None = None  # reply with these bytes as the body (malformed replies)
    gate: threading.Event | None = None  # stream: send the first token, wait for the gate
    stall_s: float = 0.0  # stream: headers at once, then silence this long before the first event


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any
    disconnected: bool = False  # the client went away while a delayed answer was pending


class FakeUpstream:
    """OpenAI (``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``)
    and Anthropic (``/v1/messages``, ``/v1/models``) on one loopback port."""

    def __init__(self, api_key: str = "test-key", chunk_delay_s: float = 0.0) -> None:
        self.api_key = api_key
        self.chunk_delay_s = chunk_delay_s
        self.script: deque[Step] = deque()
        self.always: Step | None = None  # applied whenever the script is empty
        self.requests: list[Recorded] = []
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._openai(replies.openai_chat), methods=["POST"]),
                Route("/v1/completions", self._openai(replies.openai_completion), methods=["POST"]),
                Route("/v1/embeddings", self._openai(replies.openai_embeddings), methods=["POST"]),
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )
        self._thread = ServerThread(self.app)

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._thread.base_url

    @property
    def port(self) -> int:
        return self._thread.port

    def start(self) -> FakeUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._thread.stop()

    def reset(self) -> None:
        self.script.clear()
        self.always = None
        self.requests.clear()

    @property
    def disconnects(self) -> int:
        """Requests recorded since the last reset whose client went away before the answer: a
        request of an earlier test that notices its hang-up only after the reset is not counted."""
        return sum(1 for r in self.requests if r.disconnected)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    # -- plumbing ------------------------------------------------------------------------------

    async def _begin(
        self, request: Request, anthropic: bool
    ) -> tuple[Any, Step | None, Response | None]:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        recorded = Recorded(request.url.path, dict(request.headers), body)
        self.requests.append(recorded)
        auth = request.headers.get("authorization", "")
        presented = (
            auth[7:] if auth.lower().startswith("bearer ") else request.headers.get("x-api-key")
        )
        if presented != self.api_key:
            return (
                body,
                None,
                self._error(401, "invalid x-api-key", anthropic, "authentication_error"),
            )
        step = self.script.popleft() if self.script else self.always
        if step is not None and step.delay_s and await self._client_left(request, step.delay_s):
            recorded.disconnected = True
            return body, step, Response(status_code=499)
        if step is not None and step.raw is not None:
            return body, step, Response(step.raw, step.status, step.headers, "application/json")
        if step is not None and step.status != 200:
            content = step.body or None
            if content is None:
                return (
                    body,
                    step,
                    self._error(
                        step.status, f"scripted {step.status}", anthropic, headers=step.headers
                    ),
                )
            return body, step, JSONResponse(content, step.status, step.headers)
        return body, step, None

    @staticmethod
    async def _client_left(request: Request, delay_s: float) -> bool:
        """Wait ``delay_s``; True as soon as the client disconnects instead."""
        deadline = time.monotonic() + delay_s
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(0.01, left))
            if await request.is_disconnected():
                return True
        return False

    @staticmethod
    def _error(
        status: int,
        message: str,
        anthropic: bool,
        kind: str = "api_error",
        headers: dict[str, str] | None = None,
    ) -> Response:
        if anthropic:
            content: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            content = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return JSONResponse(content, status, headers)

    def _sse(self, events: list[bytes], step: Step | None) -> StreamingResponse:
        cut = step.cut_after if step is not None else None
        gate = step.gate if step is not None else None
        stall = step.stall_s if step is not None else 0.0

        # the gate holds the stream after its first token: past an opening role delta, which
        # carries none (a gateway may hold that back until content comes)
        held = 1 + next((i for i, e in enumerate(events) if PREAMBLE not in e), 0)

        async def gen() -> Any:
            for i, event in enumerate(events):
                if i == 0 and stall:
                    await asyncio.sleep(stall)
                if cut is not None and i >= cut:
                    return
                if self.chunk_delay_s and i:
                    await asyncio.sleep(self.chunk_delay_s)
                if gate is not None and i == held:
                    await asyncio.to_thread(gate.wait, 30)
                yield event

        return StreamingResponse(gen(), media_type="text/event-stream")

    # -- the routes ------------------------------------------------------------------------------

    def _openai(self, reply: Callable[[Any], replies.Reply]) -> Endpoint:
        """An OpenAI route answering with ``reply`` of the body (JSON, or SSE events)."""

        async def answer(request: Request) -> Response:
            body, step, early = await self._begin(request, anthropic=False)
            if early is not None:
                return early
            result = reply(body)
            return JSONResponse(result) if isinstance(result, dict) else self._sse(result, step)

        return answer

    async def _models(self, request: Request) -> Response:
        self.requests.append(Recorded(request.url.path, dict(request.headers), None))
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}],
            }
        )

    async def _messages(self, request: Request) -> Response:
        body, step, early = await self._begin(request, anthropic=True)
        if early is not None:
            return early
        refusal = replies.anthropic_refusal(body)
        if refusal is not None:
            return self._error(400, refusal, True, "invalid_request_error")
        reply = replies.anthropic_message(body)
        return JSONResponse(reply) if isinstance(reply, dict) else self._sse(reply, step)
