"""A fake upstream that speaks the OpenAI and Anthropic wire protocols over loopback HTTP.

Tests and benchmarks drive NOA's real provider clients (the official SDKs) against it. By default
it answers deterministically ("echo: <last user text>"); ``script`` queues one-off behaviours
(an error status, a delay, a stream cut after N events) applied to the next requests in order.
Every request is recorded with its headers and JSON body.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from noa.testing.server import ServerThread

ANTHROPIC_SAMPLING = ("temperature", "top_p", "top_k")


@dataclass
class Step:
    """One scripted behaviour for the next matching request."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    cut_after: int | None = None  # stream: close the connection after N events
    raw: bytes | None = None  # reply with these bytes as the body (malformed replies)
    gate: threading.Event | None = None  # stream: send the first event, wait for the gate
    stall_s: float = 0.0  # stream: headers at once, then silence this long before the first event


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


def fake_embedding(text: str, dims: int = 8) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    vec = [b / 255.0 - 0.5 for b in digest[:dims]]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def _words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p if i == 0 else " " + p for i, p in enumerate(parts)]


class FakeUpstream:
    """OpenAI (``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``)
    and Anthropic (``/v1/messages``, ``/v1/models``) on one loopback port."""

    def __init__(self, api_key: str = "test-key", chunk_delay_s: float = 0.0) -> None:
        self.api_key = api_key
        self.chunk_delay_s = chunk_delay_s
        self.script: deque[Step] = deque()
        self.always: Step | None = None  # applied whenever the script is empty
        self.requests: list[Recorded] = []
        self.disconnects = 0  # clients that went away while a delayed answer was pending
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._completions, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
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
        self.disconnects = 0

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
        self.requests.append(Recorded(request.url.path, dict(request.headers), body))
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
            self.disconnects += 1
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

        async def gen() -> Any:
            for i, event in enumerate(events):
                if i == 0 and stall:
                    await asyncio.sleep(stall)
                if cut is not None and i >= cut:
                    return
                if self.chunk_delay_s and i:
                    await asyncio.sleep(self.chunk_delay_s)
                if gate is not None and i == 1:
                    await asyncio.to_thread(gate.wait, 30)
                yield event

        return StreamingResponse(gen(), media_type="text/event-stream")

    # -- OpenAI ----------------------------------------------------------------------------------

    def _reply(self, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        text = _last_user_text(body.get("messages") or [])
        tools = body.get("tools") or []
        forced = body.get("tool_choice") not in (None, "auto", "none")
        if tools and (forced or text.startswith("tool:")):
            name = tools[0]["function"]["name"]
            call = {
                "id": "call_1",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps({"echo": text})},
            }
            return "", [call]
        return f"echo: {text}", []

    async def _chat(self, request: Request) -> Response:
        body, step, early = await self._begin(request, anthropic=False)
        if early is not None:
            return early
        text, calls = self._reply(body)
        model = body.get("model", "fake")
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in body["messages"])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(text.split()),
            "total_tokens": prompt_tokens + len(text.split()),
        }
        finish = "tool_calls" if calls else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = calls
            return JSONResponse(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage,
                }
            )
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            data = {
                **base,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": w}) for w in _words(text)] if text else []
        events += [chunk({"tool_calls": [{"index": 0, **c}]}) for c in calls]
        events.append(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(
                b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\n"
            )
        events.append(b"data: [DONE]\n\n")
        return self._sse(events, step)

    async def _completions(self, request: Request) -> Response:
        body, step, early = await self._begin(request, anthropic=False)
        if early is not None:
            return early
        prompt = body.get("prompt")
        text = f"echo: {prompt}"
        base = {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
        }
        usage = {
            "prompt_tokens": 1,
            "completion_tokens": len(text.split()),
            "total_tokens": 1 + len(text.split()),
        }
        if not body.get("stream"):
            return JSONResponse(
                {
                    **base,
                    "choices": [
                        {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}
                    ],
                    "usage": usage,
                }
            )
        events = [
            b"data: "
            + json.dumps(
                {
                    **base,
                    "choices": [{"index": 0, "text": w, "logprobs": None, "finish_reason": None}],
                }
            ).encode()
            + b"\n\n"
            for w in _words(text)
        ]
        events.append(
            b"data: "
            + json.dumps(
                {
                    **base,
                    "choices": [
                        {"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}
                    ],
                }
            ).encode()
            + b"\n\n"
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(
                b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\n"
            )
        events.append(b"data: [DONE]\n\n")
        return self._sse(events, step)

    async def _embeddings(self, request: Request) -> Response:
        body, _step, early = await self._begin(request, anthropic=False)
        if early is not None:
            return early
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": fake_embedding(str(t))}
            for i, t in enumerate(inputs)
        ]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
            }
        )

    async def _models(self, request: Request) -> Response:
        self.requests.append(Recorded(request.url.path, dict(request.headers), None))
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}],
            }
        )

    # -- Anthropic -------------------------------------------------------------------------------

    async def _messages(self, request: Request) -> Response:
        body, step, early = await self._begin(request, anthropic=True)
        if early is not None:
            return early
        for key in ANTHROPIC_SAMPLING:
            if key in body:
                return self._error(
                    400, f"{key}: Extra inputs are not permitted", True, "invalid_request_error"
                )
        if "max_tokens" not in body:
            return self._error(400, "max_tokens: Field required", True, "invalid_request_error")
        text = _last_user_text(
            [{"role": m["role"], "content": m["content"]} for m in body.get("messages", [])]
        )
        tools = body.get("tools") or []
        forced = (body.get("tool_choice") or {}).get("type") in ("any", "tool")
        use_tool = bool(tools) and (forced or text.startswith("tool:"))
        model = body.get("model", "claude-fake")
        usage = {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 2}
        if use_tool:
            content: list[dict[str, Any]] = [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": tools[0]["name"],
                    "input": {"echo": text},
                }
            ]
            stop_reason = "tool_use"
        else:
            content = [{"type": "text", "text": f"echo: {text}"}]
            stop_reason = "end_turn"
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": usage,
                }
            )

        def event(kind: str, data: dict[str, Any]) -> bytes:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

        events = [
            event(
                "message_start",
                {
                    "message": {
                        "id": "msg_fake",
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {
                            "input_tokens": 10,
                            "output_tokens": 1,
                            "cache_read_input_tokens": 2,
                        },
                    }
                },
            ),
            event("ping", {}),
        ]
        if use_tool:
            block = content[0]
            events.append(
                event(
                    "content_block_start",
                    {
                        "index": 0,
                        "content_block": {
                            "type": "tool_use",
                            "id": block["id"],
                            "name": block["name"],
                            "input": {},
                        },
                    },
                )
            )
            args = json.dumps(block["input"])
            half = len(args) // 2
            for part in (args[:half], args[half:]):
                events.append(
                    event(
                        "content_block_delta",
                        {"index": 0, "delta": {"type": "input_json_delta", "partial_json": part}},
                    )
                )
        else:
            events.append(
                event(
                    "content_block_start",
                    {"index": 0, "content_block": {"type": "text", "text": ""}},
                )
            )
            for w in _words(content[0]["text"]):
                events.append(
                    event(
                        "content_block_delta",
                        {"index": 0, "delta": {"type": "text_delta", "text": w}},
                    )
                )
        events.append(event("content_block_stop", {"index": 0}))
        events.append(
            event(
                "message_delta",
                {
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": 3},
                },
            )
        )
        events.append(event("message_stop", {}))
        return self._sse(events, step)
