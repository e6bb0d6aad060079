"""Keep-alive HTTP/1.1 connections to one origin (``http1.py`` speaks on each), at most
``max_connections`` of them open at once: a request beyond that waits, in turn, for one to be
free or closed, and fails only as its caller's timeout says.

Reuse: idle connections expire after ``keepalive_s``; a request on a reused connection that the
server had closed before it answered goes again once on a fresh one; a response abandoned
before its end takes its connection with it.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from noa.providers.transport.http1 import MAX_BODY_BYTES, Connection, ConnectionClosed, Response

MAX_CONNECTIONS = 100


@dataclass
class Pool:
    """Keep-alive connections to one origin (``scheme://host:port``)."""

    origin: str
    connect_timeout_s: float = 30.0
    keepalive_s: float = 15.0
    max_idle: int = 256
    max_connections: int = MAX_CONNECTIONS
    max_body_bytes: int = MAX_BODY_BYTES
    ssl_context: ssl.SSLContext | None = None
    clock: Callable[[], float] = time.monotonic
    _idle: list[Connection] = field(default_factory=list)
    _waiters: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)
    _open: set[Connection] = field(default_factory=set)
    _connecting: int = 0

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_body_bytes < 1:
            raise ValueError("max_connections and max_body_bytes must be positive")
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

    @property
    def connections(self) -> int:
        """Connections open or being opened: at most ``max_connections``."""
        return len(self._open) + self._connecting

    # -- what connections report -------------------------------------------------------------
    def release(self, conn: Connection) -> None:
        if len(self._idle) >= self.max_idle:
            conn.drop()
            return
        conn.idle_since = self.clock()
        self._idle.append(conn)
        self._wake()

    def forget(self, conn: Connection) -> None:
        self._open.discard(conn)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # -- taking one ----------------------------------------------------------------------------
    def _reusable(self) -> Connection | None:
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

    async def _take(self) -> Connection:
        """An idle connection, else a new one while under the cap, else the first one freed
        (a waiter woken for nothing keeps its place at the head of the queue)."""
        waited = False
        while True:
            conn = self._reusable()
            if conn is not None:
                return conn
            if self.connections < self.max_connections:
                self._connecting += 1
                try:
                    conn = await self._connect()
                except BaseException:
                    self._connecting -= 1
                    self._wake()  # its place is free again
                    raise
                self._connecting -= 1
                if not conn.closed:
                    self._open.add(conn)
                return conn
            waiter = asyncio.get_running_loop().create_future()
            if waited:
                self._waiters.appendleft(waiter)
            else:
                self._waiters.append(waiter)
            waited = True
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken, then cancelled: the next one takes the turn
                else:
                    waiter.cancel()
                raise

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout_s):
            _, conn = await loop.create_connection(
                lambda: Connection(self),
                self.host,
                self.port,
                ssl=self.ssl_context if self.tls else None,
                server_hostname=self.host if self.tls else None,
            )
        return conn

    async def request(self, head: bytes, body: bytes = b"") -> Response:
        """Send ``head`` (request line and headers, ending in a blank line) and ``body``; the
        response once its status and headers are in. The caller reads or closes it."""
        for attempt in (0, 1):
            conn = await self._take()
            reused, conn.used = conn.used, True
            response = Response(conn, self.max_body_bytes)
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
