"""Usage records: one per answered request, written in batches off the hot path, and the
queries behind ``GET /v1/usage`` and the admin summaries.

``UsageRecorder.record`` only appends to a buffer; a background task writes it every
``flush_interval_s`` (or sooner when ``batch_size`` records wait). A write that fails keeps the
records for the next try; ``aclose`` writes everything left, so a clean shutdown loses nothing.
The buffer is bounded (``max_buffer``): past it, while the database stays away, the oldest
records are dropped and counted, rather than memory growing without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import operator
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import KW_ONLY, dataclass, field, fields
from typing import Any, Literal

from noa.storage.db import Database

logger = logging.getLogger("noa.usage")
GroupBy = Literal["key", "team", "model", "day", "provider"]


@dataclass(frozen=True, slots=True)
class UsageRecord:
    operation: str
    status: int
    key_id: str | None = None
    team: str | None = None
    model: str | None = None
    provider: str | None = None
    upstream: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cache: str | None = None
    correlation_id: str | None = None
    created_at: float = field(default_factory=time.time)


COLUMNS = ("id", *(f.name for f in fields(UsageRecord)))
_VALUES = operator.attrgetter(*COLUMNS[1:])  # a row's values: astuple() deep-copies, slowly
INSERT = (
    f"INSERT INTO noa_usage ({', '.join(COLUMNS)}) VALUES "
    f"({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))})"
)


@dataclass(eq=False)
class UsageRecorder:
    db: Database
    _: KW_ONLY
    batch_size: int = 500
    flush_interval_s: float = 1.0
    max_buffer: int = 200_000
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    written: int = field(default=0, init=False)
    dropped: int = field(default=0, init=False)
    failures: int = field(default=0, init=False)
    _buffer: deque[tuple[str, UsageRecord]] = field(default_factory=deque, init=False)
    _process: str = field(default_factory=lambda: uuid.uuid4().hex[:8], init=False)
    _count: Iterator[int] = field(default_factory=itertools.count, init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _flushing: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    def start(self) -> UsageRecorder:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def record(self, record: UsageRecord) -> None:
        if self._task is None:  # the first record starts the writer, in the loop serving
            self.start()
        if len(self._buffer) >= self.max_buffer:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append((self._id(), record))
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    def _id(self) -> str:
        """Unique, and increasing within a recorder: rows are appended to the table's B-tree
        rather than inserted at random places (random ids cost page splits on every batch)."""
        return f"{time.time_ns():016x}{self._process}{next(self._count) & 0xFFFFFF:06x}"

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Write what is buffered; False if the database refused (the records stay)."""
        async with self._flushing:
            while self._buffer:
                batch = [
                    self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))
                ]
                try:
                    await self.db.executemany(INSERT, [(i, *_VALUES(r)) for i, r in batch])
                except Exception as e:
                    self._buffer.extendleft(reversed(batch))
                    self.failures += 1
                    logger.warning("could not write %d usage records (kept): %s", len(batch), e)
                    return False
                self.written += len(batch)
        return True

    async def aclose(self, attempts: int = 3) -> None:
        """Stop the loop and write everything left (a few tries if the database hiccups)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for attempt in range(attempts):
            if await self.flush():
                return
            await self.sleep(0.2 * (attempt + 1))
        logger.error("%d usage records could not be written at shutdown", len(self._buffer))


class UsageQueries:
    """Reading the records back: totals grouped, and one principal's own."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _day(self) -> str:
        if self.db.dialect == "postgres":
            return "to_char(to_timestamp(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        return "date(created_at, 'unixepoch')"

    async def summary(
        self,
        group_by: GroupBy,
        *,
        start: float | None = None,
        end: float | None = None,
        key_id: str | None = None,
        team: str | None = None,
    ) -> list[dict[str, Any]]:
        """Requests, tokens, cost and errors per group, within [start, end)."""
        column = {
            "key": "key_id",
            "team": "team",
            "model": "model",
            "provider": "provider",
            "day": self._day(),
        }[group_by]
        where, args = self._where(start, end, key_id, team)
        rows = await self.db.fetch(
            f"SELECT {column} AS grp, count(*) AS requests,"
            " sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,"
            " sum(cost_usd) AS cost_usd,"
            " sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors,"
            " sum(CASE WHEN cache LIKE 'hit%' THEN 1 ELSE 0 END) AS cache_hits"
            f" FROM noa_usage{where} GROUP BY grp ORDER BY grp",
            *args,
        )
        return [
            {
                group_by: r["grp"],
                "requests": int(r["requests"]),
                "prompt_tokens": int(r["prompt_tokens"] or 0),
                "completion_tokens": int(r["completion_tokens"] or 0),
                "cost_usd": round(float(r["cost_usd"] or 0.0), 10),
                "errors": int(r["errors"] or 0),
                "cache_hits": int(r["cache_hits"] or 0),
            }
            for r in rows
        ]

    async def records(
        self,
        *,
        key_id: str | None = None,
        team: str | None = None,
        start: float | None = None,
        end: float | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        where, args = self._where(start, end, key_id, team)
        args.append(limit)
        return await self.db.fetch(
            f"SELECT {', '.join(COLUMNS)} FROM noa_usage{where}"
            f" ORDER BY created_at DESC LIMIT ${len(args)}",
            *args,
        )

    async def spent(
        self, *, since: float, key_id: str | None = None, team: str | None = None
    ) -> float:
        """USD spent since ``since`` by a key or a team (budgets start from this)."""
        where, args = self._where(since, None, key_id, team)
        row = await self.db.fetchrow(f"SELECT sum(cost_usd) AS spent FROM noa_usage{where}", *args)
        return float(row["spent"] or 0.0) if row else 0.0

    @staticmethod
    def _where(
        start: float | None, end: float | None, key_id: str | None, team: str | None
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        for sql, value in (
            ("created_at >= ${}", start),
            ("created_at < ${}", end),
            ("key_id = ${}", key_id),
            ("team = ${}", team),
        ):
            if value is not None:
                args.append(value)
                clauses.append(sql.format(len(args)))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
