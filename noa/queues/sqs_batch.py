"""SQS calls made together: concurrent ``DeleteMessage`` / ``SendMessage`` calls of a bridge go
out as ``DeleteMessageBatch`` / ``SendMessageBatch`` requests of up to ten entries.

SQS bills and rate-limits by request, and a bridge deletes every message it took and sends
every answer it owes: batched, that is up to ten times fewer requests. An idle caller waits for
nothing (the first call leaves at the event loop's next turn, alone or with what else was
called in that turn); under load the calls made while ``lanes`` batches are on their way wait
and leave together. A batch holds entries of one queue only, at most ``MAX_ENTRIES`` and at
most ``max_bytes`` of message payload (SQS refuses a batch whose messages add up to more than
its message size limit); an entry over that alone still goes, alone, for SQS to answer.

Each caller gets its own entry's answer: the ``Successful`` entry, or ``EntryFailed`` with the
``Failed`` entry's code and message; a failure of the whole request is every entry's (unless
``split`` says it was for the batch as a whole: then its entries are sent one by one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

MAX_ENTRIES = 10  # SQS's most entries per batch request
MAX_BATCH_BYTES = 256 * 1024  # SQS's payload limit of one batch (the classic message limit)

Send = Callable[[str, list[dict[str, Any]]], Awaitable[Mapping[str, Any]]]


class EntryFailed(Exception):
    """SQS answered this entry of a batch with a failure."""

    def __init__(self, code: str, message: str, sender_fault: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.sender_fault = sender_fault


def payload_bytes(entry: Mapping[str, Any]) -> int:
    """What an entry weighs against a batch's payload limit: its body and attributes."""
    size = len(str(entry.get("MessageBody", "")).encode("utf-8"))
    for name, value in (entry.get("MessageAttributes") or {}).items():
        size += len(name.encode()) + len(str(value.get("DataType", "")))
        size += len(str(value.get("StringValue", "")).encode("utf-8"))
    return size


class Batcher:
    """``await batcher(queue_url, entry)``: ``entry``'s answer from a batch request made with
    ``send(queue_url, entries)`` (entries' ``Id`` are set here)."""

    def __init__(
        self,
        send: Send,
        *,
        lanes: int = 8,
        max_bytes: int = MAX_BATCH_BYTES,
        split: Callable[[Exception], bool] = lambda _: False,
    ) -> None:
        if lanes < 1:
            raise ValueError("lanes must be at least 1")
        self._send = send
        self._split = split
        self._lanes = lanes
        self._max_bytes = max_bytes
        self._waiting: dict[str, list[tuple[dict[str, Any], asyncio.Future[Any]]]] = {}
        self._senders: set[asyncio.Task[None]] = set()
        self._active = 0  # senders not yet past their last look at what waits

    async def __call__(self, queue_url: str, entry: Mapping[str, Any]) -> Mapping[str, Any]:
        future: asyncio.Future[Mapping[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(queue_url, []).append((dict(entry), future))
        if self._active < self._lanes:
            self._active += 1
            task = asyncio.create_task(self._drain(), name="sqs batch")
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)
        return await future

    async def close(self) -> None:
        """Stop sending: the calls still waiting are cancelled."""
        for task in list(self._senders):
            task.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        for waiting in self._waiting.values():
            for _, future in waiting:
                future.cancel()
        self._waiting.clear()

    def _next(self) -> tuple[str, list[tuple[dict[str, Any], asyncio.Future[Any]]]]:
        queue_url = next(iter(self._waiting))
        waiting = self._waiting.pop(queue_url)
        batch: list[tuple[dict[str, Any], asyncio.Future[Any]]] = []
        weight = 0
        while waiting and len(batch) < MAX_ENTRIES:
            size = payload_bytes(waiting[0][0])
            if batch and weight + size > self._max_bytes:
                break
            batch.append(waiting.pop(0))
            weight += size
        if waiting:
            self._waiting[queue_url] = waiting  # (behind the other queues: each gets a turn)
        return queue_url, batch

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # the calls of this turn go together
            while self._waiting:
                await self._flush(*self._next())
        finally:  # (no await between the last look and this: a new call starts a sender)
            self._active -= 1

    async def _flush(
        self, queue_url: str, batch: list[tuple[dict[str, Any], asyncio.Future[Any]]]
    ) -> None:
        batch = [(entry, future) for entry, future in batch if not future.done()]
        if not batch:
            return
        entries = [{**entry, "Id": str(i)} for i, (entry, _) in enumerate(batch)]
        try:
            answer = await self._send(queue_url, entries)
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the whole request failed: every entry's failure
            if len(batch) > 1 and self._split(exc):  # (or refused for their sum: one by one)
                for item in batch:
                    await self._flush(queue_url, [item])
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        _answer(batch, answer)


def _answer(
    batch: list[tuple[dict[str, Any], asyncio.Future[Any]]], answer: Mapping[str, Any]
) -> None:
    succeeded = {str(e.get("Id")): e for e in answer.get("Successful") or []}
    failed = {str(e.get("Id")): e for e in answer.get("Failed") or []}
    for i, (_, future) in enumerate(batch):
        if future.done():  # its caller gave up meanwhile
            continue
        if str(i) in succeeded:
            future.set_result(succeeded[str(i)])
            continue
        entry = failed.get(str(i), {"Code": "NoAnswer", "Message": "SQS did not answer it"})
        future.set_exception(
            EntryFailed(
                str(entry.get("Code", "")),
                str(entry.get("Message", "")),
                bool(entry.get("SenderFault", True)),
            )
        )
