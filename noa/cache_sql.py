"""L3: the response cache persisted in SQL: SQLite (the embedded default) or PostgreSQL.

One table, ``noa_response_cache(key, value, expires_at, stored_at)``. Reads ignore expired rows;
every ``prune_every`` writes, expired rows are deleted and the oldest beyond ``max_entries``.
The connection opens on first use, so a database that is down at start-up only costs the tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Clock = Callable[[], float]

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS noa_response_cache (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL NOT NULL, stored_at REAL NOT NULL
)"""
POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS noa_response_cache (
    key TEXT PRIMARY KEY, value BYTEA NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL, stored_at DOUBLE PRECISION NOT NULL
)"""


class SqlTier:
    """``get``/``set`` over SQLite (``sqlite:///path``) or PostgreSQL (``postgresql://...``)."""

    def __init__(
        self,
        url: str,
        *,
        max_entries: int = 1_000_000,
        prune_every: int = 1000,
        clock: Clock = time.time,
        name: str = "l3",
    ) -> None:
        self.name = name
        self.url = url
        self._max = max_entries
        self._prune_every = prune_every
        self._clock = clock
        self._writes = 0
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self.postgres = url.startswith(("postgres://", "postgresql://"))
        if not self.postgres and not url.startswith("sqlite:///"):
            raise ValueError(f"unsupported database URL scheme: {url.split(':', 1)[0]}")

    async def _connection(self) -> Any:
        if self._conn is not None:
            return self._conn
        async with self._lock:
            if self._conn is None:
                if self.postgres:
                    import asyncpg

                    pool = await asyncpg.create_pool(self.url, min_size=1, max_size=4)
                    await pool.execute(POSTGRES_SCHEMA)
                    self._conn = pool
                else:
                    import aiosqlite

                    path = Path(self.url.removeprefix("sqlite:///"))
                    path.parent.mkdir(parents=True, exist_ok=True)
                    conn = await aiosqlite.connect(path)
                    await conn.execute("PRAGMA journal_mode=WAL")
                    await conn.execute(SQLITE_SCHEMA)
                    await conn.commit()
                    self._conn = conn
        return self._conn

    async def _reset(self) -> None:
        """Forget a broken connection: the next call opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken
                await conn.close()

    async def get(self, key: str) -> bytes | None:
        now = self._clock()
        try:
            conn = await self._connection()
            if self.postgres:
                row = await conn.fetchrow(
                    "SELECT value FROM noa_response_cache WHERE key = $1 AND expires_at > $2",
                    key,
                    now,
                )
                return None if row is None else bytes(row["value"])
            async with conn.execute(
                "SELECT value FROM noa_response_cache WHERE key = ? AND expires_at > ?", (key, now)
            ) as cursor:
                found = await cursor.fetchone()
            return None if found is None else bytes(found[0])
        except Exception:
            await self._reset()
            raise

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        now = self._clock()
        try:
            conn = await self._connection()
            if self.postgres:
                await conn.execute(
                    "INSERT INTO noa_response_cache (key, value, expires_at, stored_at)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO UPDATE SET"
                    " value = EXCLUDED.value, expires_at = EXCLUDED.expires_at,"
                    " stored_at = EXCLUDED.stored_at",
                    key,
                    value,
                    now + ttl_s,
                    now,
                )
            else:
                await conn.execute(
                    "INSERT OR REPLACE INTO noa_response_cache VALUES (?, ?, ?, ?)",
                    (key, value, now + ttl_s, now),
                )
                await conn.commit()
            self._writes += 1
            if self._writes % self._prune_every == 0:
                await self.prune()
        except Exception:
            await self._reset()
            raise

    async def prune(self) -> None:
        """Delete expired rows, then the oldest beyond ``max_entries``."""
        conn = await self._connection()
        now = self._clock()
        if self.postgres:
            await conn.execute("DELETE FROM noa_response_cache WHERE expires_at <= $1", now)
            await conn.execute(
                "DELETE FROM noa_response_cache WHERE key IN (SELECT key FROM noa_response_cache"
                " ORDER BY stored_at DESC OFFSET $1)",
                self._max,
            )
            return
        await conn.execute("DELETE FROM noa_response_cache WHERE expires_at <= ?", (now,))
        await conn.execute(
            "DELETE FROM noa_response_cache WHERE key IN (SELECT key FROM noa_response_cache"
            " ORDER BY stored_at DESC LIMIT -1 OFFSET ?)",
            (self._max,),
        )
        await conn.commit()

    async def aclose(self) -> None:
        await self._reset()
