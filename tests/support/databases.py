"""The suite's PostgreSQL, one fresh schema per test (so tests never see each other's rows)."""

from __future__ import annotations

import os
import uuid

import pytest

from noa.storage.db import Database, PostgresDatabase, connect


def postgres_dsn() -> str:
    value = os.environ.get("NOA_TEST_POSTGRES_DSN")
    if not value:
        pytest.fail("NOA_TEST_POSTGRES_DSN is not set: run the suite through ./scripts/test.sh")
    return value


async def fresh_postgres() -> Database:
    """A schema of this test's own, so tests never see each other's rows."""
    admin = await connect(postgres_dsn())
    schema = f"t_{uuid.uuid4().hex[:12]}"
    await admin.execute(f"CREATE SCHEMA {schema}")
    await admin.close()
    import asyncpg

    pool = await asyncpg.create_pool(
        postgres_dsn(), min_size=1, max_size=4, server_settings={"search_path": schema}
    )
    return PostgresDatabase(pool)


def fresh_database_url() -> str:
    """A new, empty PostgreSQL database on the suite's server; its URL."""
    import asyncio

    name = f"noa_t_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        admin = await connect(postgres_dsn())
        await admin.execute(f"CREATE DATABASE {name}")
        await admin.close()

    asyncio.run(create())
    return postgres_dsn().rsplit("/", 1)[0] + f"/{name}"
