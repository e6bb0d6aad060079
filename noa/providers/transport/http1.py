"""A lean HTTP/1.1 client for the upstream calls: keep-alive pool, TLS, JSON and streamed bodies.

Why not aiohttp: on 2 cores against a loopback upstream one JSON POST costs about 240 us of
CPU through ``aiohttp.ClientSession`` and about 60 us here (README, "Performance");
the upstream call was the largest single cost of a Gateway request. What is here is what NOA's
upstreams need and nothing else: requests with a bytes body (or none), responses parsed by
``httptools`` (llhttp: content-length, chunked and close-delimited bodies), gzip/deflate
decoding, keep-alive with idle expiry, one retry on a fresh connection when a reused one turns
out to have been closed by the server before it answered, and no connection reuse after an
abandoned response. No proxies, redirects or cookies (the SDK transport has them).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools

MAX_BUFFERED = 1 << 20  # stop reading from the socket while a reader is this far behind


class ConnectionClosed(ConnectionError):
    """The server closed the connection before the response was complete."""


class Response:
    """One response: status and headers once they are in, the body as it arrives."""

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
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

    # -- fed by the connection ---------------------------------------------------------------
    def _on_headers(self) -> None:
        encoding = self.headers.get("content-encoding", "").lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._decoder = zlib.decompressobj(47 if encoding != "deflate" else zlib.MAX_WBITS)
        elif encoding not in ("", "identity"):
            self._fail(ConnectionError(f"unsupported content-encoding {encoding!r}"))
            return
        if not self.head.done():
            self.head.set_result(None)

    def _on_body(self, data: bytes) -> None:
        if self._decoder is not None:
            data = self._decoder.decompress(data)
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered > MAX_BUFFERED:
                self._conn.pause()
            self._wake()

    def _on_complete(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._chunks.append(tail)
        self.complete = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self.complete:
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
    async def chunks(self, idle_timeout_s: float | None = None) -> AsyncIterator[bytes]:
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
        parts = [chunk async for chunk in self.chunks()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """Done with it, read to the end or not (an unread rest means the socket is dropped)."""
        self._conn.finished(self)


class _Connection(asyncio.Protocol):
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.idle_since = 0.0
        self.used = False
        self.keep_alive = False
        self._paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # nothing asked: a server speaking out of turn
            self.drop()
            return
        response.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            response._fail(ConnectionError("the upstream tried to upgrade the connection"))
            self.drop()
        except httptools.HttpParserError as e:
            response._fail(ConnectionError(f"malformed HTTP response: {e}"))
            self.drop()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
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


@dataclass
class Pool:
    """Keep-alive connections to one origin (``scheme://host:port``)."""

    origin: str
    connect_timeout_s: float = 30.0
    keepalive_s: float = 15.0
    max_idle: int = 256
    ssl_context: ssl.SSLContext | None = None
    clock: Callable[[], float] = time.monotonic
    _idle: list[_Connection] = field(default_factory=list)

    def __post_init__(self) -> None:
        parts = urlsplit(self.origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) origin: {self.origin!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        default = self.port == (443 if self.tls else 80)
        name = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = name if default else f"{name}:{self.port}"
        if self.tls and self.ssl_context is None:
            self.ssl_context = ssl.create_default_context()

    def release(self, conn: _Connection) -> None:
        if len(self._idle) >= self.max_idle:
            conn.drop()
            return
        conn.idle_since = self.clock()
        self._idle.append(conn)

    def _reusable(self) -> _Connection | None:
        now = self.clock()
        while self._idle:
            conn = self._idle.pop()
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            if now - conn.idle_since > self.keepalive_s:
                conn.drop()
                continue
            return conn
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout_s):
            _, conn = await loop.create_connection(
                lambda: _Connection(self),
                self.host,
                self.port,
                ssl=self.ssl_context if self.tls else None,
                server_hostname=self.host if self.tls else None,
            )
        return conn

    async def request(self, head: bytes, body: bytes = b"") -> Response:
        """Send ``head`` (request line and headers, ending in a blank line) and ``body``; the
        response once its status and headers are in. The caller reads or closes it."""
        conn = self._reusable()
        for attempt in (0, 1):
            if conn is None:
                conn = await self._connect()
            reused, conn.used = conn.used, True
            response = Response(conn)
            conn.response = response
            assert conn.transport is not None
            conn.transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                conn.transport.write(body)
            try:
                await asyncio.shield(response.head)
                return response
            except ConnectionClosed:
                conn.response = None
                conn.drop()
                # a kept-alive connection the server had already closed: it never saw this
                if attempt == 0 and reused and not response.received_any:
                    conn = None
                    continue
                raise
            except BaseException:
                conn.response = None
                conn.drop()
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        for conn in self._idle:
            conn.drop()
        self._idle.clear()


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
