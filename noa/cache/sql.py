"""L3: the response cache persisted in the database (SQLite, the embedded default, or
PostgreSQL), in the table ``noa_response_cache`` of the migrations (``noa/storage``).

Reads ignore expired rows; every ``prune_every`` writes, expired rows are deleted, then those
older than the ``max_entries`` newest (rows stored in the same instant as the last one kept
stay too). Both deletes walk an index. The database opens on first use, so one that is down
at start-up only costs the tier.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

from noa.storage.db import Database

Clock = Callable[[], float]

GET = "SELECT value FROM noa_response_cache WHERE key = $1 AND expires_at > $2"
SET = (
    "INSERT INTO noa_response_cache (key, value, expires_at, stored_at) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
    " expires_at = excluded.expires_at, stored_at = excluded.stored_at"
)
PRUNE_EXPIRED = "DELETE FROM noa_response_cache WHERE expires_at <= $1"
PRUNE_OLDEST = (
    "DELETE FROM noa_response_cache WHERE stored_at < (SELECT stored_at FROM noa_response_cache"
    " ORDER BY stored_at DESC LIMIT 1 OFFSET $1)"
)


@dataclass(eq=False)
class SqlTier:
    """``get``/``set`` over the database's ``noa_response_cache`` table."""

    db: Database
    _: KW_ONLY
    max_entries: int = 1_000_000
    prune_every: int = 1000
    clock: Clock = time.time
    name: str = "l3"
    _writes: int = field(default=0, init=False)

    async def get(self, key: str) -> bytes | None:
        row = await self.db.fetchrow(GET, key, self.clock())
        return None if row is None else bytes(row["value"])

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        now = self.clock()
        await self.db.execute(SET, key, value, now + ttl_s, now)
        self._writes += 1
        if self._writes % self.prune_every == 0:
            await self.prune()

    async def prune(self) -> None:
        """Delete expired rows, then the oldest beyond ``max_entries``."""
        await self.db.execute(PRUNE_EXPIRED, self.clock())
        await self.db.execute(PRUNE_OLDEST, self.max_entries - 1)
