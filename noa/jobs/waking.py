"""Waking the job runner after a job is stored, without one call per job.

``Waker()`` asks for a wake-up: the call (``wake``, a handle call to the JobRunner) starts at
once when none is on its way; asked for while one is, it is made once more right after that
one ends, however many times it was asked meanwhile. The runner therefore always hears of the
last job stored (it never waits for its next poll), while a burst of stored jobs costs two
calls instead of one each. A failed wake is ``wake``'s to swallow: the runner polls anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class Waker:
    def __init__(self, wake: Callable[[], Awaitable[None]]) -> None:
        self._wake = wake
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def __call__(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self._again = False
            await self._wake()
            if not self._again:
                return
