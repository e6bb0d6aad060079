"""Cancel the upstream call when the client goes away: nobody pays for tokens nobody reads.

Streams already stop when the client leaves (Starlette cancels the response's generator, which
closes the upstream stream). A non-streamed call, and a stream's wait for its first token, would
otherwise run to the end: a watcher reads the ASGI ``receive`` channel, which yields
``http.disconnect`` once the client has left, and cancels the request's task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

from noa.errors import ClientDisconnectedError

T = TypeVar("T")


async def _watch(receive: Receive, task: asyncio.Task[object], gone: list[bool]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.append(True)
            task.cancel()
            return


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """``await work``, cancelled as soon as the client disconnects (ClientDisconnectedError)."""
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - always inside a task under an ASGI server
        return await work
    gone: list[bool] = []
    watcher = asyncio.get_running_loop().create_task(_watch(receive, task, gone))
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise
        task.uncancel()
        raise ClientDisconnectedError("the client closed the connection") from None
    finally:
        watcher.cancel()
