"""One small async interface over SQLite (``aiosqlite``, the embedded default) and PostgreSQL
(``asyncpg``): keys, teams and usage records use it with the same SQL.

Queries use PostgreSQL's numbered parameters (``$1``, ``$2``); SQLite reads them as ``?1``,
``?2``. Rows come back as dicts. ``transaction()`` holds the database's write lock for its
block (``BEGIN IMMEDIATE`` on SQLite, a transaction on one pooled connection on PostgreSQL).
Relative SQLite paths are resolved by the config (``$NOA_HOME``), not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

Row = dict[str, Any]
_NUMBERED = re.compile(r"\$(\d+)")


class Database(Protocol):
    """What the stores need of a database."""

    dialect: str  # "sqlite" | "postgres"

    async def execute(self, sql: str, *args: Any) -> None: ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Database]: ...

    async def close(self) -> None: ...


def is_postgres(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://"))


async def connect(url: str) -> Database:
    """A database for ``sqlite:///path`` or ``postgresql://...``."""
    if is_postgres(url):
        import asyncpg

        pool = await asyncpg.create_pool(url, min_size=1, max_size=8)
        return PostgresDatabase(pool)
    if url.startswith("sqlite:///"):
        import aiosqlite

        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)  # autocommit; BEGIN explicit
        try:
            await conn.execute("PRAGMA busy_timeout=5000")  # other processes writing the file
            await _use_wal(conn)
            await conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable at checkpoints
        except BaseException:
            await conn.close()
            raise
        return SqliteDatabase(conn)
    raise ValueError(f"unsupported database URL scheme: {url.split(':', 1)[0]}")


async def _use_wal(conn: Any, attempts: int = 100, pause_s: float = 0.05) -> None:
    """Switch the file to WAL (it stays so). Switching needs the file to itself, and SQLite
    answers "database is locked" at once, without waiting out the busy timeout, while another
    connection writes: replicas starting together on a new file do. So try again shortly."""
    import sqlite3

    for attempt in range(attempts):
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == attempts - 1:
                raise
            await asyncio.sleep(pause_s)


class SqliteDatabase:
    """One connection; calls take turns on it. Inside ``transaction()`` the block's own view
    holds the turn until it commits."""

    dialect = "sqlite"

    def __init__(self, conn: Any, lock: asyncio.Lock | None = None, held: bool = False) -> None:
        self._conn = conn
        self._lock = lock or asyncio.Lock()
        self._held = held  # this view is a transaction's: the lock is already ours

    @staticmethod
    def _sql(sql: str) -> str:
        return _NUMBERED.sub(r"?\1", sql)

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        if self._held:
            yield
            return
        async with self._lock:
            yield

    async def execute(self, sql: str, *args: Any) -> None:
        async with self._turn():
            await self._conn.execute(self._sql(sql), args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self._held:
            await self._conn.executemany(self._sql(sql), rows)
            return
        async with self.transaction() as tx:  # one commit (one fsync) for the whole batch
            await tx.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._turn(), self._conn.execute(self._sql(sql), args) as cursor:
            names = [d[0] for d in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        if self._held:
            yield self
            return
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteDatabase(self._conn, self._lock, held=True)
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def close(self) -> None:
        if not self._held:
            await self._conn.close()


class PostgresDatabase:
    dialect = "postgres"

    def __init__(self, pool: Any, conn: Any = None) -> None:
        self._pool = pool
        self._conn = conn  # set inside a transaction: every call goes to that connection

    def _target(self) -> Any:
        return self._conn if self._conn is not None else self._pool

    async def execute(self, sql: str, *args: Any) -> None:
        await self._target().execute(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._target().executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(r) for r in await self._target().fetch(sql, *args)]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row = await self._target().fetchrow(sql, *args)
        return None if row is None else dict(row)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        if self._conn is not None:
            yield self
            return
        async with self._pool.acquire() as conn, conn.transaction():
            yield PostgresDatabase(self._pool, conn)

    async def close(self) -> None:
        if self._conn is None:
            await self._pool.close()


class LazyDatabase:
    """Connects (and applies the migrations) on first use, in the event loop that uses it: a
    replica's constructor, a CLI call or a test server each get the connection of their loop,
    and a database that is down at start-up fails requests that need it, not the start."""

    def __init__(self, url: str, setup: Callable[[Database], Awaitable[object]] | None = None):
        self.url = url
        self.dialect = "postgres" if is_postgres(url) else "sqlite"
        self._setup = setup
        self._db: Database | None = None
        self._lock: asyncio.Lock | None = None

    async def _get(self) -> Database:
        if self._db is not None:
            return self._db
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._db is None:
                db = await connect(self.url)
                try:
                    if self._setup is not None:
                        await self._setup(db)
                except BaseException:
                    await db.close()
                    raise
                self._db = db
        return self._db

    async def execute(self, sql: str, *args: Any) -> None:
        await (await self._get()).execute(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await (await self._get()).executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await (await self._get()).fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await (await self._get()).fetchrow(sql, *args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        async with (await self._get()).transaction() as tx:
            yield tx

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()
