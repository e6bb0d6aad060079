"""The secret API keys are hashed under, on both databases: made once and kept in the database
(the same for every replica), independent of the master key, and keys made before it existed
(under the secret derived from the master key, or ``$NOA_HOME/key-secret``) still work and
move to it."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from databases import fresh_database_url

from noa.access.key_secret import KeySecrets, derived_from_master
from noa.access.keys import KeyHasher, KeyStore
from noa.build import access as access_build
from noa.config import NoaConfig
from noa.storage.db import Database
from noa.storage.migrations import MIGRATIONS, migrate


def env(home: Path, **extra: str) -> dict[str, str]:
    return {"NOA_HOME": str(home), **extra}


def store(db: Database, environ: dict[str, str]) -> KeyStore:
    """The key store a Gateway replica (or ``noa keys``) builds from this environment."""
    return access_build.build(NoaConfig(), db, environ=environ).keys


async def hash_of(db: Database, key_id: str) -> tuple[str, int]:
    row = await db.fetchrow("SELECT hash, legacy_hash FROM noa_api_keys WHERE id = $1", key_id)
    assert row is not None
    return row["hash"], row["legacy_hash"]


async def test_rotating_the_master_key_keeps_every_api_key(db: Database, tmp_path: Path) -> None:
    before = env(tmp_path, NOA_MASTER_KEY="sk-master-before")
    secret, key = await store(db, before).create(name="ci")
    after = env(tmp_path, NOA_MASTER_KEY="sk-master-after")
    found = await store(db, after).verify(secret)
    assert found is not None and found.id == key.id
    auth = access_build.build(NoaConfig(), db, environ=after).auth
    assert (await auth.authenticate(secret)).id == key.id  # what a request goes through
    assert (await auth.authenticate("sk-master-after")).kind == "master"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path}/shared.db" if request.param == "sqlite" else fresh_database_url()


async def test_replicas_starting_together_agree_on_the_secret(
    database_url: str, tmp_path: Path
) -> None:
    """Two processes on one fresh database, each with its own connection: the first to store
    a secret wins, and both hash under it."""
    environ = env(tmp_path, NOA_DATABASE_URL=database_url)
    dbs = [access_build.database(NoaConfig(), environ) for _ in range(2)]
    try:
        stores = [store(db, environ) for db in dbs]
        digests = await asyncio.gather(*(s.digest("sk-noa-same") for s in stores))
        assert digests[0] == digests[1]
        secret, key = await stores[0].create(name="made-by-one")
        found = await stores[1].verify(secret)
        assert found is not None and found.id == key.id
    finally:
        for db in dbs:
            await db.close()


async def old_key(db: Database, hasher: KeyHasher) -> tuple[Database, str, str]:
    """A key made by a NOA from before the stored secret (schema version 2), then the
    database migrated as an upgraded NOA does at start-up."""
    later = [  # the tables of migrations 4 on: a version 2 database has none of them
        name
        for m in MIGRATIONS
        if m.version >= 4
        for statement in m.statements
        for name in re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", statement)
    ]
    for table in reversed(later):
        await db.execute(f"DROP TABLE IF EXISTS {table}")
    await db.execute("DROP TABLE noa_api_keys")
    await db.execute("DROP TABLE noa_settings")
    await db.execute("DELETE FROM noa_schema WHERE version >= 3")
    await db.execute(MIGRATIONS[0].statements[1])  # noa_api_keys as version 1 made it
    secret, key = await KeyStore(db, hasher).create(name="old")
    assert await migrate(db) == [m.version for m in MIGRATIONS if m.version >= 3]
    return db, secret, key.id


async def test_a_key_hashed_under_the_master_key_still_works_and_moves_to_the_stored_secret(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    master = "sk-master-of-old"
    db, secret, key_id = await old_key(db, KeyHasher(derived_from_master(master)))
    old_hash, legacy = await hash_of(db, key_id)
    assert legacy == 1
    upgraded = store(db, env(tmp_path, NOA_MASTER_KEY=master))
    with caplog.at_level(logging.WARNING, logger="noa.keys"):
        assert await upgraded.digest("sk-noa-x")  # the first use resolves the secrets
    assert "1 API keys are still hashed under a secret derived from NOA_MASTER_KEY" in caplog.text
    found = await upgraded.verify(secret)
    assert found is not None and found.id == key_id
    new_hash, legacy = await hash_of(db, key_id)
    assert new_hash != old_hash and legacy == 0  # re-hashed under the stored secret
    rotated = store(db, env(tmp_path, NOA_MASTER_KEY="sk-master-new"))
    found = await rotated.verify(secret)  # the master key may change now
    assert found is not None and found.id == key_id


async def test_a_key_hashed_under_the_home_file_secret_still_works(
    db: Database, tmp_path: Path
) -> None:
    (tmp_path / "key-secret").write_text("f" * 64)  # what NOA made without a master key
    db, secret, key_id = await old_key(db, KeyHasher(b"f" * 64))
    found = await store(db, env(tmp_path)).verify(secret)
    assert found is not None and found.id == key_id
    assert (await hash_of(db, key_id))[1] == 0
    (tmp_path / "key-secret").unlink()  # no longer needed for it
    found = await store(db, env(tmp_path, NOA_MASTER_KEY="sk-master-later")).verify(secret)
    assert found is not None and found.id == key_id


async def test_setting_noa_key_secret_later_keeps_the_keys_made_before(
    db: Database, tmp_path: Path
) -> None:
    secret, key = await store(db, env(tmp_path)).create(name="before")
    explicit = env(tmp_path, NOA_KEY_SECRET="an-operator-chosen-secret-0123456789")
    keys = store(db, explicit)
    found = await keys.verify(secret)
    assert found is not None and found.id == key.id
    assert (await hash_of(db, key.id))[0] == KeyHasher(
        b"an-operator-chosen-secret-0123456789"
    ).digest(secret)
    assert await keys.verify("sk-noa-never-made") is None


def test_a_short_key_secret_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        KeySecrets(explicit=b"short")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        access_build.key_secrets(NoaConfig(), {"NOA_KEY_SECRET": "short"})
