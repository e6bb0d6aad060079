"""Calls to a remote endpoint coalesced: while one batch is on its way, the calls made meanwhile
wait and go out together as the next batch (one handle call instead of one each).

An idle caller waits for nothing: the first call leaves at the event loop's next turn, with
whatever else was called in that turn. Under load a batch holds everything that came in while
the previous one was out, at most ``max_batch``. Each call gets its own answer (or its own
batch's exception); the endpoint takes the batch's items in order, one after the other, so each
is decided exactly as a single call would be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

A = TypeVar("A")
R = TypeVar("R")


class Coalescer(Generic[A, R]):
    """``await coalescer(arg)``: the answer to ``arg`` from ``send([... arg ...])``."""

    def __init__(
        self, send: Callable[[list[A]], Awaitable[Sequence[R]]], max_batch: int = 256
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._send = send
        self._max = max_batch
        self._waiting: list[tuple[A, asyncio.Future[R]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def __call__(self, arg: A) -> R:
        return await self.submit(arg)

    def submit(self, arg: A) -> asyncio.Future[R]:
        """Queue ``arg`` now (calls leave in the order they were submitted): its answer's
        future, for a caller that need not wait for it."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((arg, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._drain(), name="coalesced calls")
        return future

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[: self._max], self._waiting[self._max :]
            try:
                answers = await self._send([arg for arg, _ in batch])
                if len(answers) != len(batch):
                    raise RuntimeError(f"{len(answers)} answers to {len(batch)} calls")
            except asyncio.CancelledError:
                for _, future in batch + self._waiting:
                    future.cancel()
                self._waiting = []
                raise
            except Exception as exc:  # every call of this batch gets it; the next batch goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():  # its caller may have given up meanwhile
                    future.set_result(answer)
