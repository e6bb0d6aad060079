"""Breaker state shared through Redis by every NOA app that uses the same Redis.

Inside one app the HealthActor's ``BreakerHub`` is the shared view (``noa.routing.breakers.hub``).
With Redis configured, the hub also hands each transition it hears to this relay, which writes
it to Redis and publishes it; the relay applies the other apps' transitions (another Ray
cluster, another region) to the hub, so a provider one deployment finds dead is skipped by all
of them, and a due breaker is probed by one app for all of them.

In Redis an open breaker is the key ``noa:breaker:<provider/upstream>`` whose time to live is the
rest of its open period plus the probe timeout, so the remaining open time is read on Redis's
own clock and no two machines' clocks need to agree; a closed breaker has no key. Each
transition is also published on ``noa:breakers``; a relay that lost its subscription reads the
keys again once it is back. Redis going away costs only the sharing: the hub goes on alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from noa.routing.breakers.hub import BreakerHub, stop_tasks

logger = logging.getLogger("noa.breakers")

KEY = "noa:breaker:"
PROBE = "noa:breaker-probe:"
CHANNEL = "noa:breakers"

Clock = Callable[[], float]

# 1 when ARGV[1] may probe KEYS[1]: not open in Redis, or due and nobody else has claimed it.
_CLAIM = """
local pttl = redis.call('PTTL', KEYS[1])
if pttl < 0 then return 1 end
if pttl > tonumber(ARGV[2]) then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[2]) == ARGV[1] then return 1 end
return 0
"""


def _ms(seconds: float) -> int:
    return max(0, math.ceil(seconds * 1000))


class RelayOutbox:
    """The hub's transitions on their way to Redis (``BreakerHub(on_report=outbox.put)``)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, str, float]] = asyncio.Queue()

    def put(self, key: str, state: str, remaining_s: float) -> None:
        self.queue.put_nowait((key, state, remaining_s))


class RedisBreakerRelay:
    def __init__(
        self,
        hub: BreakerHub,
        url: str,
        *,
        origin: str,
        outbox: RelayOutbox,
        probe_timeout_s: float = 60.0,
        timeout_s: float = 0.5,
        retry_s: float = 1.0,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        import redis.asyncio as redis

        self.hub = hub
        self.origin = origin
        self._probe_ms = max(1, _ms(probe_timeout_s))
        self._retry_s = retry_s
        self._clock = clock
        self._sleep = sleep
        options: dict[str, Any] = {"socket_connect_timeout": timeout_s, "health_check_interval": 30}
        self._client: Any = redis.Redis.from_url(url, socket_timeout=timeout_s, **options)
        # waits on the channel: long reads, but not forever on a Redis that stopped answering
        self._listener: Any = redis.Redis.from_url(url, socket_timeout=15.0, **options)
        self._claim = self._client.register_script(_CLAIM)
        self._outbox = outbox
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False  # (a loop stops on it too: redis-py may swallow a cancellation)
        self._down_until = 0.0  # claims skip Redis until then, after an error
        self._healthy = True
        self.subscribed = asyncio.Event()
        self.counts = {"sent": 0, "received": 0, "errors": 0}

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._send()), loop.create_task(self._listen())]

    async def claim(self, key: str) -> bool:
        """May this app probe ``key``? Yes when Redis cannot say (probe rather than never)."""
        if self._clock() < self._down_until:
            return True
        try:
            claimed = await self._claim(
                keys=[KEY + key, PROBE + key], args=[self.origin, self._probe_ms]
            )
        except Exception as e:
            self._failed("claim a probe", e)
            return True
        return bool(claimed)

    def _failed(self, what: str, error: Exception) -> None:
        self.counts["errors"] += 1
        if self._healthy:  # once per outage, not once per retry
            logger.warning("breakers: could not %s through Redis: %s", what, error)
        self._healthy = False
        self._down_until = self._clock() + self._retry_s

    def _succeeded(self) -> None:
        if not self._healthy:
            logger.warning("breakers: sharing through Redis again")
        self._healthy = True

    async def _send(self) -> None:
        while True:
            key, state, remaining_s = await self._outbox.queue.get()
            message = {
                "origin": self.origin,
                "key": key,
                "state": state,
                "remaining_s": remaining_s,
            }
            try:
                async with self._client.pipeline(transaction=True) as pipe:
                    if state == "open":  # due once the TTL is down to the probe timeout
                        pipe.set(KEY + key, self.origin, px=_ms(remaining_s) + self._probe_ms)
                    else:
                        pipe.delete(KEY + key)
                    pipe.delete(PROBE + key)
                    pipe.publish(CHANNEL, json.dumps(message))
                    await pipe.execute()
                self.counts["sent"] += 1
                self._succeeded()
            except Exception as e:  # this app's own state still holds
                self._failed(f"share {key} {state}", e)

    async def _listen(self) -> None:
        while not self._closing:
            pubsub = self._listener.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                await self._load()  # after subscribing, so nothing falls in between
                self.subscribed.set()
                self._succeeded()
                while not self._closing:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is not None:
                        self._apply(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.subscribed.clear()
                self._failed("follow other apps' breakers", e)
                await self._sleep(self._retry_s)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _load(self) -> None:
        """Every breaker Redis holds open, into the hub."""
        async for name in self._listener.scan_iter(match=KEY + "*", count=500):
            pttl = await self._listener.pttl(name)
            if pttl >= 0:
                key = (name.decode() if isinstance(name, bytes) else name)[len(KEY) :]
                self.hub.report(key, "open", max(0, pttl - self._probe_ms) / 1000, share=False)

    def _apply(self, data: Any) -> None:
        try:
            message = json.loads(data)
            if message["origin"] == self.origin:
                return
            state = "open" if message["state"] == "open" else "closed"
            self.hub.report(message["key"], state, float(message["remaining_s"]), share=False)
            self.counts["received"] += 1
        except (ValueError, KeyError, TypeError) as e:
            logger.warning("breakers: ignoring a malformed message on %s: %s", CHANNEL, e)

    async def aclose(self) -> None:
        self._closing = True
        await stop_tasks(self._tasks)
        for client in (self._client, self._listener):
            with contextlib.suppress(Exception):
                await client.aclose()
