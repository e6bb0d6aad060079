"""The outside view of Redis Streams for the bridge tests (``brokers.BrokerProbe``): a
producer ``XADD``\\ s request entries, a reader reads a result stream from its start; a private
Redis (append-only file on, so a restart keeps the streams and groups) can be restarted."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path

import redis.asyncio as aioredis

from noa.queues.redis_streams import RedisStreamsTransport
from noa.queues.transport import Endpoints, Transport


class Probe:
    kind = "redis"

    def __init__(self, url: str, server: subprocess.Popen[bytes] | None = None) -> None:
        self.url = url
        self.client = aioredis.from_url(url)
        self.server = server
        self.args: list[str] = []
        self.offsets: dict[str, str] = {}  # per stream read: the last id returned

    def endpoints(
        self, source: str, reply_to: str, dead_letter: str, consumer: str = "noa-1"
    ) -> Endpoints:
        return Endpoints(
            url=self.url,
            source=source,
            group="noa",
            consumer=consumer,
            reply_to=reply_to,
            dead_letter=dead_letter,
            options={"claim_idle_s": 1.0},
        )

    def transport(self, endpoints: Endpoints) -> Transport:
        return RedisStreamsTransport(endpoints)

    async def create(self, *names: str) -> None:
        return None  # streams are made by their first XADD (the group by the transport)

    async def send(self, destination: str, body: bytes, message_id: str | None = None) -> None:
        fields: dict[str | bytes, bytes | str] = {"body": body}
        if message_id is not None:
            fields["message_id"] = message_id
        await self.client.xadd(destination, fields)

    async def read(self, destination: str, n: int, timeout_s: float) -> list[bytes]:
        out: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while True:
            last = self.offsets.get(destination, "0-0")
            block = 100 if len(out) < n else None  # once n came: only what is there already
            got = await self.client.xread({destination: last}, count=1000, block=block)
            for _stream, entries in got or []:
                for entry_id, fields in entries:
                    self.offsets[destination] = entry_id.decode()
                    out.append(fields[b"body"])
            if (len(out) >= n and not got) or time.monotonic() > deadline:
                return out

    async def restart(self) -> None:
        await self.stop()
        await asyncio.sleep(0.2)
        await self.start()

    async def stop(self) -> None:
        """Stop a private Redis (SIGTERM: it flushes its append-only file; its port refuses)."""
        assert self.server is not None, "only a private Redis stops"
        self.server.terminate()
        await asyncio.to_thread(self.server.wait, 30)

    async def start(self) -> None:
        """Start it again on the same port, with what it had stored."""
        assert self.server is not None, "only a private Redis starts"
        self.server = subprocess.Popen(self.args, stdout=subprocess.DEVNULL)  # noqa: ASYNC220
        await _ready(self.url)
        await self.client.aclose()
        self.client = aioredis.from_url(self.url)  # its connections died with the server

    async def close(self) -> None:
        await self.client.aclose()
        if self.server is not None:
            self.server.kill()
            self.server.wait(timeout=30)


async def private(tmp: Path) -> Probe:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp),
        "--save", "", "--appendonly", "yes", "--appendfsync", "always",
    ]  # fmt: skip
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL)  # noqa: ASYNC220
    url = f"redis://127.0.0.1:{port}/0"
    await _ready(url)
    made = Probe(url, server)
    made.args = args
    return made


async def _ready(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        client = aioredis.from_url(url)
        try:
            await client.ping()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
        finally:
            await client.aclose()
