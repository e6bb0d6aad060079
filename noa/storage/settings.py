"""Values NOA makes once and keeps in the database (``noa_settings``): every replica and node
sharing the database reads the same one, whichever process stored it first."""

from __future__ import annotations

import time
from collections.abc import Callable

from noa.storage.db import Database

Clock = Callable[[], float]


async def setting(db: Database, name: str) -> str | None:
    """The stored value of ``name``, or None."""
    row = await db.fetchrow("SELECT value FROM noa_settings WHERE name = $1", name)
    return None if row is None else str(row["value"])


async def setting_once(db: Database, name: str, value: str, clock: Clock = time.time) -> str:
    """The stored value of ``name``, storing ``value`` first when there is none. Processes that
    race agree: the first insert wins and each reads back what is stored."""
    await db.execute(
        "INSERT INTO noa_settings (name, value, created_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (name) DO NOTHING",
        name,
        value,
        clock(),
    )
    stored = await setting(db, name)
    if stored is None:  # deleted between the two statements
        raise RuntimeError(f"setting {name} vanished as it was stored")
    return stored
