"""A scripted HTTP/1.1 server on a loopback port for the upstream client's tests, and the
calls they make through a ``Pool``."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

from noa.providers.transport import http1
from noa.providers.transport.pool import Pool

Handler = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


class Server:
    """Reads each request (head and Content-Length body) and lets ``handler`` answer it; the
    handler returns False to close the connection. Counts connections and requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                if not await self.handler(head + body, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def fixed(reply: bytes, keep: bool = True) -> Server:
    async def handler(
        request: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> bool:
        w.write(reply)
        await w.drain()
        return keep

    return await Server(handler).start()


async def call(pool: Pool, body: bytes = b"{}") -> tuple[int, bytes]:
    head = http1.request_head("POST", "/v1/x", pool.host_header, {"Authorization": "Bearer k"})
    response = await pool.request(http1.with_body(head, body), body)
    try:
        return response.status, await response.read()
    finally:
        response.close()
