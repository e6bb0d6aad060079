"""Fixtures for tests against the suite's real services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from databases import fresh_postgres
from scripted_http import Server

from noa.storage.db import Database, connect
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


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    """Scripted HTTP servers a test starts (``servers.append``); stopped after it."""
    started: list[Server] = []
    yield started
    for server in started:
        await server.stop()
