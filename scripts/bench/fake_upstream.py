#!/usr/bin/env python3
"""A fast fake OpenAI-compatible upstream for benchmarks: raw asyncio on uvloop, no framework.

    python scripts/bench/fake_upstream.py --port 9999 [--delay-ms 0] [--chunks 3]
                                          [--chunk-interval-ms 0]

``POST /v1/chat/completions`` answers a fixed tiny chat completion, or an SSE stream when the
body asks for ``"stream": true`` (``--chunks`` content chunks, ``--chunk-interval-ms`` apart,
then a finish chunk, a usage chunk and ``[DONE]``). ``GET /v1/models`` lists one model.
``--delay-ms`` holds every answer that long. HTTP/1.1 keep-alive; a few microseconds of CPU per
request, so the gateway under test, not the upstream, is what gets measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import uvloop

ANSWER = "Hello! How can I help?"
WORDS = ["Hello!", " How", " can", " I", " help?"]


def _response(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 "
        + status.encode()
        + b"\r\ncontent-type: "
        + content_type
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def chat_body(model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15},
        },
        separators=(",", ":"),
    ).encode()


def sse_events(model: str, chunks: int) -> list[bytes]:
    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def event(choices: list[dict[str, object]], **extra: object) -> bytes:
        data = json.dumps({**base, "choices": choices, **extra}, separators=(",", ":"))
        return b"data: " + data.encode() + b"\n\n"

    out = [
        event(
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )
    ]
    for i in range(chunks):
        out.append(
            event(
                [
                    {
                        "index": 0,
                        "delta": {"content": WORDS[i % len(WORDS)]},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
        )
    out.append(event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]))
    out.append(
        event(
            [], usage={"prompt_tokens": 9, "completion_tokens": chunks, "total_tokens": 9 + chunks}
        )
    )
    out.append(b"data: [DONE]\n\n")
    return out


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class Upstream(asyncio.Protocol):
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.task: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].decode("latin-1")
        lines = head.split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if len(self.buffer) < end + 4 + length:
            return
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        self.busy = True
        self.task = asyncio.ensure_future(self._answer(method, path, body))

    async def _answer(self, method: str, path: str, body: bytes) -> None:
        assert self.transport is not None
        o = self.options
        if o.delay_ms:
            await asyncio.sleep(o.delay_ms / 1000)
        if method == "POST" and path.startswith("/v1/chat/completions"):
            try:
                request = json.loads(body)
            except ValueError:
                request = {}
            model = str(request.get("model", "bench"))
            if request.get("stream"):
                await self._stream(model)
            else:
                self.transport.write(_response("200 OK", chat_body(model)))
        elif method == "GET" and path.startswith("/v1/models"):
            models = (
                b'{"object":"list","data":[{"id":"bench","object":"model","created":0,'
                b'"owned_by":"bench"}]}'
            )
            self.transport.write(_response("200 OK", models))
        else:
            self.transport.write(_response("404 Not Found", b'{"error":{"message":"no"}}'))
        self.busy = False
        if self.buffer:
            self._next()

    async def _stream(self, model: str) -> None:
        assert self.transport is not None
        events = sse_events(model, self.options.chunks)
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
        )
        interval = self.options.chunk_interval_ms / 1000
        if not interval:
            self.transport.write(head + b"".join(_chunk(e) for e in events) + b"0\r\n\r\n")
            return
        self.transport.write(head + _chunk(events[0]))
        for event in events[1:]:
            await asyncio.sleep(interval)
            if self.transport.is_closing():
                return
            self.transport.write(_chunk(event))
        self.transport.write(b"0\r\n\r\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=5)
    parser.add_argument("--chunk-interval-ms", type=float, default=0.0)
    options = parser.parse_args()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: Upstream(options), options.host, options.port, backlog=1024
        )
        print(f"fake upstream on http://{options.host}:{options.port}", flush=True)
        await server.serve_forever()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
