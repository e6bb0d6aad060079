"""How a bridge's loops wait: ``sleep_or_stop`` (a sleep cut short by the bridge stopping) and
``DepthGate``, which holds a message back while the job queue of its model is full.

``DepthGate.room_for(model)`` returns at once without a limit; with ``max_queue_depth`` it
waits while ``model`` has that many queued jobs. The count is read from the job store at most
every ``check_s`` (up to the limit: "over it?" is all that is asked) and every message let in
since is added to it, so the messages held together do not all pass on one count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from noa.jobs.store import JobStore
from noa.queues.bridge_health import BridgeHealth

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


async def sleep_or_stop(sleep: Sleep, seconds: float, stop: asyncio.Event) -> bool:
    """Sleep ``seconds`` or until ``stop``; whether it was stopped."""
    if stop.is_set():
        return True
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(sleep(seconds))]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()
    return stop.is_set()


class DepthGate:
    """Back-pressure from the job queue (see the module docstring); waiting messages are
    counted in ``health.waiting_for_room``."""

    def __init__(
        self,
        store: JobStore,
        limit: int | None,
        check_s: float,
        health: BridgeHealth,
        clock: Clock,
        sleep: Sleep,
    ) -> None:
        self.store = store
        self.limit = limit
        self.check_s = check_s
        self.health = health
        self.clock = clock
        self.sleep = sleep
        self._depth: dict[str, tuple[float, int]] = {}  # model -> (counted at, queued)
        self._lock = asyncio.Lock()

    async def room_for(self, model: str, stop: asyncio.Event) -> None:
        """Wait while ``model``'s job queue is at the limit; then count this message in."""
        limit = self.limit
        if limit is None:
            return
        waited = False
        try:
            while not stop.is_set():
                async with self._lock:
                    if await self._queued(model, limit) < limit:
                        checked_at, count = self._depth[model]
                        self._depth[model] = (checked_at, count + 1)
                        return
                if not waited:
                    waited = True
                    self.health.waiting_for_room += 1
                await sleep_or_stop(self.sleep, self.check_s, stop)
        finally:
            if waited:
                self.health.waiting_for_room -= 1

    async def _queued(self, model: str, limit: int) -> int:
        now = self.clock()
        checked = self._depth.get(model)
        if checked is None or now - checked[0] >= self.check_s:
            checked = (now, await self.store.model_queued(model, limit))
            self._depth[model] = checked
        return checked[1]
