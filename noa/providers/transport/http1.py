"""A lean HTTP/1.1 client for the upstream calls: keep-alive pool, TLS, JSON and streamed bodies.

Why not aiohttp: on 2 cores against a loopback upstream one JSON POST costs about 240 us of
CPU through ``aiohttp.ClientSession`` and about 60 us here (README, "Performance");
the upstream call was the largest single cost of a Gateway request. What is here is what NOA's
upstreams need and nothing else: requests with a bytes body (or none), responses parsed by
``httptools`` (llhttp: content-length, chunked and close-delimited bodies), gzip/deflate
decoding, bounded sizes (a response head of at most ``MAX_HEAD_BYTES``; a body, however it
inflates, of at most the pool's ``max_body_bytes``: a gzip bomb is cut, not decompressed), and
the connections themselves. The keep-alive pool over them, capped per origin, is in
``pool.py``. No proxies, redirects or cookies (``transport/__init__.py`` hands requests that
need a proxy to the SDK transport).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import zlib
from collections.abc import AsyncGenerator, Mapping
from typing import Protocol, cast

import httptools

MAX_BUFFERED = 1 << 20  # stop reading from the socket while a reader is this far behind
MAX_HEAD_BYTES = 64 << 10  # status line and headers
MAX_BODY_BYTES = 64 << 20  # a body read whole, or waiting to be read, decompressed


class ConnectionClosed(ConnectionError):
    """The server closed the connection before the response was complete."""


class ResponseTooLarge(ValueError):
    """The response's head or body is larger than the client reads."""


class Owner(Protocol):
    """Where a connection goes back when its response is over (``pool.Pool``)."""

    def release(self, conn: Connection) -> None: ...

    def forget(self, conn: Connection) -> None:
        """``conn`` is closed: it no longer counts against the cap."""
        ...


class Response:
    """One response: status and headers once they are in, the body as it arrives (at most
    ``max_bytes`` of it unread at a time, or read whole by ``read``)."""

    def __init__(self, conn: Connection, max_bytes: int = MAX_BODY_BYTES) -> None:
        self._conn = conn
        self._max = max_bytes
        self.status = 0
        self.reason = ""
        self.headers: dict[str, str] = {}
        self.head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.complete = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._decoder: zlib._Decompress | None = None
        self.received_any = False
        self.head_bytes = 0  # of the headers parsed
        self.head_pending = 0  # received while the head was not complete

    # -- fed by the connection ---------------------------------------------------------------
    def _on_headers(self) -> None:
        encoding = self.headers.get("content-encoding", "").lower()
        length = self.headers.get("content-length", "")
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._decoder = zlib.decompressobj(47 if encoding != "deflate" else zlib.MAX_WBITS)
        elif encoding not in ("", "identity"):
            self._fail(ConnectionError(f"unsupported content-encoding {encoding!r}"))
            return
        if length.isdigit() and int(length) > self._max:
            self._too_large(f"a body of {int(length)} bytes")
            return
        if not self.head.done():
            self.head.set_result(None)

    def _too_large(self, what: str) -> None:
        self._fail(ResponseTooLarge(f"{what}: more than the {self._max} bytes read"))
        self._conn.drop()

    def _on_body(self, data: bytes) -> None:
        if self._error is not None:
            return
        room = self._max - self._buffered
        if self._decoder is not None:  # never inflated past the room, however it would
            data = self._decoder.decompress(data, room + 1)
        if len(data) > room:
            self._too_large("a body" if self._decoder is None else "a body once decompressed")
            return
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered > MAX_BUFFERED:
                self._conn.pause()
            self._wake()

    def _on_complete(self) -> None:
        if self._error is not None:
            return
        if self._decoder is not None:
            tail = self._decoder.flush()
            if len(tail) > self._max - self._buffered:
                self._too_large("a body once decompressed")
                return
            if tail:
                self._chunks.append(tail)
        self.complete = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self.complete or self._error is not None:  # the first reason is the one that counts
            return
        self._error = error
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: the request awaiting it re-raises it
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- read by the caller ------------------------------------------------------------------
    async def chunks(self, idle_timeout_s: float | None = None) -> AsyncGenerator[bytes, None]:
        """The body's bytes as they arrive; ``idle_timeout_s`` bounds each silence."""
        try:
            while True:
                while self._chunks:
                    chunk = self._chunks.popleft()
                    self._buffered -= len(chunk)
                    if self._buffered <= MAX_BUFFERED // 2:
                        self._conn.resume()
                    yield chunk
                if self._error is not None:
                    raise self._error
                if self.complete:
                    break
                self._waiter = asyncio.get_running_loop().create_future()
                async with asyncio.timeout(idle_timeout_s):
                    await self._waiter
                self._waiter = None
        finally:
            self._conn.finished(self)

    async def read(self) -> bytes:
        """The whole body (at most ``max_bytes``)."""
        parts: list[bytes] = []
        total = 0
        async with contextlib.aclosing(self.chunks()) as chunks:
            async for chunk in chunks:
                total += len(chunk)
                if total > self._max:
                    self._conn.drop()  # the rest is not read, nor the connection used again
                    raise ResponseTooLarge(f"a body: more than the {self._max} bytes read")
                parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """Done with it, read to the end or not (an unread rest means the socket is dropped)."""
        self._conn.finished(self)


class Connection(asyncio.Protocol):
    """One connection to an origin, answering one request at a time for its ``Owner``."""

    def __init__(self, pool: Owner) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.idle_since = 0.0
        self.used = False
        self.keep_alive = False
        self._paused = False
        self._counted = True  # counts against its owner's cap until it is closed

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # nothing asked: a server speaking out of turn
            self.drop()
            return
        response.received_any = True
        heading = not response.head.done()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            response._fail(ConnectionError("the upstream tried to upgrade the connection"))
            self.drop()
        except httptools.HttpParserError as e:
            response._fail(ConnectionError(f"malformed HTTP response: {e}"))
            self.drop()
        if heading and not response.head.done():
            response.head_pending += len(data)  # the parser keeps a header line until it ends
            if response.head_pending > MAX_HEAD_BYTES:
                self._head_too_large(response)

    def _head_too_large(self, response: Response) -> None:
        response._fail(ResponseTooLarge(f"a head of more than {MAX_HEAD_BYTES} bytes"))
        self.drop()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._forget()
        response = self.response
        if response is None or response.complete:
            return
        if response.head.done() and not response._error and self._body_until_close(response):
            response._on_complete()  # a body delimited by the end of the connection
            return
        response._fail(ConnectionClosed("the upstream closed the connection"))

    @staticmethod
    def _body_until_close(response: Response) -> bool:
        headers = response.headers
        return "content-length" not in headers and "chunked" not in headers.get(
            "transfer-encoding", ""
        )

    # -- httptools callbacks ---------------------------------------------------------------
    def on_status(self, reason: bytes) -> None:
        if self.response is not None:
            self.response.reason = reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.head_bytes += len(name) + len(value) + 4
        if self.response.head_bytes > MAX_HEAD_BYTES:
            self._head_too_large(self.response)
            return
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.response.headers.get(key)
        self.response.headers[key] = f"{previous}, {text}" if previous else text

    def on_headers_complete(self) -> None:
        assert self.response is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # interim (100 Continue, 103 Early Hints): the real one follows
            self.response.headers = {}
            return
        self.response.status = status
        self.response._on_headers()

    def on_body(self, body: bytes) -> None:
        if self.response is not None and self.response.status:
            self.response._on_body(body)

    def on_message_complete(self) -> None:
        if self.response is not None and self.response.status:
            self.keep_alive = self.parser.should_keep_alive()  # only known at this moment
            self.response._on_complete()

    # -- flow control and reuse ------------------------------------------------------------
    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def finished(self, response: Response) -> None:
        if self.response is not response:
            return
        self.response = None
        if response.complete and not self.closed and self.keep_alive:
            self.pool.release(self)
        else:
            self.drop()

    def drop(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self._forget()

    def _forget(self) -> None:
        if self._counted:
            self._counted = False
            self.pool.forget(self)


def request_head(method: str, target: str, host: str, headers: Mapping[str, str]) -> bytes:
    """The request line and headers, each line ended, without the blank line that ends them
    (the caller adds ``Content-Length`` first, or not); refuses CR, LF or NUL anywhere in them."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if any(c in line for line in lines for c in "\r\n\0"):
        raise ValueError("a request header contains a line break")
    return "".join(f"{line}\r\n" for line in lines).encode("latin-1")


def with_body(head: bytes, body: bytes) -> bytes:
    """``head`` ended for a request carrying ``body``."""
    return b"%sContent-Length: %d\r\n\r\n" % (head, len(body))
