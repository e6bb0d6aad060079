"""A replica's metrics handed to the app's board every few seconds (one scrape then shows every
replica's totals), and once more when the replica stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from noa.observability.metrics import Metrics, Snapshot

Report = Callable[[Snapshot], Awaitable[object]]
PUSH_EVERY_S = 2.0  # how stale another replica's counts may be in a scrape


@dataclass(eq=False)
class MetricsPush:
    metrics: Metrics
    report: Report
    every_s: float = PUSH_EVERY_S
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await self.sleep(self.every_s)
            await self.push()

    async def push(self) -> None:
        """This replica's counts now (a board that is away misses one push, nothing more)."""
        with contextlib.suppress(Exception):
            await self.report(self.metrics.snapshot())

    async def aclose(self) -> None:
        """Stop, handing in the last counts."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.push()
