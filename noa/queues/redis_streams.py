"""Redis Streams as a bridge's broker (redis.asyncio): a consumer group reads the source
stream; an entry is acknowledged (``XACK``) once its job is stored.

An entry's fields: ``body`` (the request envelope, JSON), and optionally ``message_id``,
``correlation_id``, ``reply_to``; the entry's own id names it when neither the envelope nor
``message_id`` does. Results and dead letters are ``XADD``\\ ed to their streams with the same
fields (``maxlen``, an option, trims them approximately).

Entries handed to a consumer and never acknowledged stay pending in the group: those this
consumer held before a reconnect are read again first (``XREADGROUP`` from id 0), and those of
a consumer that died are claimed once idle for ``claim_idle_s`` (``XAUTOCLAIM``), so nothing
handed out is lost. At most ``prefetch`` entries are held at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from noa.queues.transport import Delivery, Endpoints

Clock = Callable[[], float]
POOL_SIZE = 16  # connections per transport: one blocks in XREADGROUP, the rest ack and publish
CLAIM_EVERY_S = 1.0  # how often idle entries of other consumers are looked for


class RedisStreamsTransport:
    kind = "redis"

    def __init__(self, endpoints: Endpoints, *, clock: Clock = time.monotonic) -> None:
        if not endpoints.url:
            raise ValueError("a Redis Streams bridge needs the Redis URL")
        self.endpoints = endpoints
        self.clock = clock
        options = endpoints.options
        self.claim_idle_ms = int(float(options.get("claim_idle_s", 60.0)) * 1000)
        self.maxlen: int | None = int(options["maxlen"]) if options.get("maxlen") else None
        self._redis: aioredis.Redis | None = None
        self._held: set[str] = set()
        self._room = asyncio.Event()  # set when an acknowledgement frees a slot
        self._own_pending = True  # read this consumer's pending entries first
        self._claimed_at = 0.0

    async def connect(self) -> None:
        e = self.endpoints
        wait_cap = 30.0  # XREADGROUP blocks at most this (receive's wait_s is capped to it)
        # a bounded pool that makes callers wait for a connection (acknowledgements of many
        # messages at once), not fail with "too many connections"
        pool = aioredis.BlockingConnectionPool.from_url(
            str(e.url),
            max_connections=POOL_SIZE,
            timeout=wait_cap + 10,
            socket_connect_timeout=5,
            socket_timeout=wait_cap + 10,
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        if e.declare:
            try:
                await self._redis.xgroup_create(e.source, e.group, id="0", mkstream=True)
            except ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise
        else:
            await self._redis.ping()
        self._held.clear()
        self._own_pending = True

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            raise ConnectionError("the Redis Streams transport is not connected")
        return self._redis

    async def receive(self, max_messages: int, wait_s: float) -> list[Delivery]:
        r, e = self._client(), self.endpoints
        room = min(max_messages, e.prefetch - len(self._held))
        if room <= 0:  # full: wait for an acknowledgement (or the time asked for)
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), wait_s)
            return []
        out: list[Delivery] = []
        if self._own_pending:  # what this consumer held before: its ids from 0
            read = await r.xreadgroup(e.group, e.consumer, {e.source: "0"}, count=room)
            entries = _entries(read)
            out.extend(self._delivery(i, f) for i, f in entries if i not in self._held)
            if len(entries) < room:
                self._own_pending = False
        if not out and self.clock() - self._claimed_at >= CLAIM_EVERY_S:
            self._claimed_at = self.clock()
            claimed = await r.xautoclaim(
                e.source, e.group, e.consumer, self.claim_idle_ms, "0-0", count=room
            )
            entries = [(i, f) for i, f in claimed[1] if f is not None]
            for deleted in claimed[2] if len(claimed) > 2 else []:  # trimmed while pending
                await r.xack(e.source, e.group, deleted)
            out.extend(self._delivery(i, f) for i, f in entries if _text(i) not in self._held)
        if not out:
            block = max(1, int(min(wait_s, 30.0) * 1000))
            read = await r.xreadgroup(e.group, e.consumer, {e.source: ">"}, count=room, block=block)
            out.extend(self._delivery(i, f) for i, f in _entries(read))
        return out

    def _delivery(self, entry_id: Any, fields: Mapping[Any, Any]) -> Delivery:
        entry = _text(entry_id)
        values = {_text(k): v for k, v in fields.items()}
        self._held.add(entry)
        body = values.get("body", b"")
        correlation = values.get("correlation_id")
        return Delivery(
            broker_id=_text(values["message_id"]) if values.get("message_id") else entry,
            body=body if isinstance(body, bytes) else str(body).encode("utf-8"),
            headers={"stream_id": entry},
            handle=entry,
            correlation_id=_text(correlation) if correlation else None,
            reply_to=_text(values["reply_to"]) if values.get("reply_to") else None,
        )

    async def ack(self, delivery: Delivery) -> None:
        e = self.endpoints
        await self._client().xack(e.source, e.group, str(delivery.handle))
        self._held.discard(str(delivery.handle))
        self._room.set()

    async def publish(
        self, destination: str, body: bytes, *, message_id: str, correlation_id: str | None
    ) -> None:
        fields: dict[Any, Any] = {"body": body, "message_id": message_id}
        if correlation_id is not None:
            fields["correlation_id"] = correlation_id
        if self.maxlen is not None:
            await self._client().xadd(destination, fields, maxlen=self.maxlen, approximate=True)
        else:
            await self._client().xadd(destination, fields)

    async def lag(self) -> int | None:
        e = self.endpoints
        for group in await self._client().xinfo_groups(e.source):
            if _text(group.get("name", b"")) == e.group:
                lag = group.get("lag")
                return int(lag) if lag is not None else None
        return None

    @property
    def held(self) -> int:
        return len(self._held)

    async def close(self) -> None:
        redis, self._redis = self._redis, None
        self._held.clear()
        if redis is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                await redis.aclose()


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _entries(read: Any) -> list[tuple[str, Mapping[Any, Any]]]:
    """The (id, fields) of an XREADGROUP answer (one stream)."""
    out: list[tuple[str, Mapping[Any, Any]]] = []
    for _stream, entries in read or []:
        out.extend((_text(i), f) for i, f in entries if f is not None)
    return out
