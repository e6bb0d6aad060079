"""Fixtures for tests against the suite's real services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from databases import fresh_postgres, postgres_dsn
from scripted_http import Server

from noa.storage.db import Database, PostgresDatabase, connect
from noa.storage.migrations import migrate


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    database = (
        await connect(f"sqlite:///{tmp_path}/noa.db")
        if request.param == "sqlite"
        else await fresh_postgres()
    )
    await migrate(database)
    yield database
    await database.close()


async def other_connection(db: Database, tmp_path: Path) -> Database:
    """A second, separate connection to the same database as ``db`` (the fixture's)."""
    if db.dialect == "sqlite":
        return await connect(f"sqlite:///{tmp_path}/noa.db")
    import asyncpg

    row = await db.fetchrow("SELECT current_schema() AS s")
    assert row is not None
    pool = await asyncpg.create_pool(
        postgres_dsn(), min_size=1, max_size=4, server_settings={"search_path": row["s"]}
    )
    return PostgresDatabase(pool)


@pytest.fixture
async def other(db: Database, tmp_path: Path) -> AsyncIterator[Database]:
    second = await other_connection(db, tmp_path)
    yield second
    await second.close()


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    """Scripted HTTP servers a test starts (``servers.append``); stopped after it."""
    started: list[Server] = []
    yield started
    for server in started:
        await server.stop()
