"""Keys, teams and migrations on both databases: SQLite (a file) and the suite's PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from clocks import ManualClock
from databases import fresh_postgres

from noa.access.keys import KeyHasher, KeyStore, Limits, TeamStore
from noa.storage.db import Database, connect
from noa.storage.migrations import MIGRATIONS, Migration, current_version, migrate


class Clock(ManualClock):
    start = 1_700_000_000.0


HASHER = KeyHasher(b"server-secret-for-tests-0123456789")


async def test_migrations_apply_once_even_when_replicas_start_together(tmp_path: Path) -> None:
    for database in (await connect(f"sqlite:///{tmp_path}/m.db"), await fresh_postgres()):
        results = await asyncio.gather(*(migrate(database) for _ in range(4)))
        assert sorted(v for applied in results for v in applied) == [m.version for m in MIGRATIONS]
        assert await current_version(database) == MIGRATIONS[-1].version
        extra = Migration(999, "test column", ("ALTER TABLE noa_teams ADD COLUMN note TEXT",))
        assert await migrate(database, (*MIGRATIONS, extra)) == [999]
        assert await migrate(database, (*MIGRATIONS, extra)) == []
        await database.close()


async def test_create_verify_and_the_secret_is_stored_nowhere(db: Database) -> None:
    keys = KeyStore(db, HASHER, Clock())
    secret, key = await keys.create(
        name="ci",
        team="research",
        models=["gpt"],
        limits=Limits(rpm=10, tpm=1000, budget_usd=5.0, budget_period="month"),
        metadata={"owner": "ana"},
    )
    assert secret.startswith("sk-noa-") and len(secret) > 40
    assert key.prefix == secret[:12]
    found = await keys.verify(secret)
    assert found == key
    assert await keys.verify(secret + "x") is None
    assert await keys.verify("sk-other") is None
    assert await keys.get(key.id) == key

    rows = await db.fetch("SELECT * FROM noa_api_keys")
    dumped = repr(rows)
    assert secret not in dumped and secret[12:] not in dumped  # only the prefix and a digest
    assert (
        rows[0]["hash"]
        == HASHER.digest(secret)
        != KeyHasher(b"another-secret-0123456").digest(secret)
    )
    assert "hash" not in key.public() and secret not in repr(key.public())


async def test_sqlite_file_never_contains_the_secret(tmp_path: Path) -> None:
    database = await connect(f"sqlite:///{tmp_path}/file.db")
    await migrate(database)
    secret, _ = await KeyStore(database, HASHER).create(name="x")
    await database.close()
    for path in tmp_path.iterdir():  # the database and its WAL
        assert secret[12:].encode() not in path.read_bytes()


async def test_revoke_expire_and_rotate(db: Database) -> None:
    clock = Clock()
    keys = KeyStore(db, HASHER, clock)
    secret, key = await keys.create(name="a", expires_at=clock.now + 60)
    assert key.state(clock.now) == "active"
    clock.now += 61
    verified = await keys.verify(secret)
    assert verified is not None and verified.state(clock.now) == "expired"

    secret2, key2 = await keys.create(name="b", limits=Limits(rpm=5), scopes=["admin"])
    rotated = await keys.rotate(key2.id)
    assert rotated is not None
    new_secret, new_key = rotated
    assert new_secret != secret2 and new_key.rotated_from == key2.id
    assert (new_key.limits, new_key.scopes) == (Limits(rpm=5), ("admin",))
    old = await keys.verify(secret2)
    assert old is not None and old.state(clock.now) == "revoked"
    assert await keys.rotate(key2.id) is None  # a revoked key cannot be rotated again

    revoked = await keys.revoke(new_key.id)
    assert revoked is not None and revoked.state(clock.now) == "revoked"
    assert await keys.revoke("key_missing") is None
    assert [k.id for k in await keys.list()] == [key.id]  # expired shows; revoked does not
    assert len(await keys.list(include_revoked=True)) == 3


async def test_list_by_team_and_unknown_scopes(db: Database) -> None:
    keys = KeyStore(db, HASHER, Clock())
    await keys.create(team="a")
    await keys.create(team="b")
    await keys.create()
    assert [k.team for k in await keys.list(team="a")] == ["a"]
    assert len(await keys.list()) == 3
    with pytest.raises(ValueError, match="unknown scopes"):
        await keys.create(scopes=["root"])


async def test_teams(db: Database) -> None:
    teams = TeamStore(db, Clock())
    team = await teams.put("research", Limits(rpm=100, budget_usd=50, budget_period="day"))
    assert await teams.get("research") == team
    updated = await teams.put("research", Limits(tpm=10), models=["gpt"])
    assert updated.created_at == team.created_at and updated.limits == Limits(tpm=10)
    assert [t.id for t in await teams.list()] == ["research"]
    assert await teams.delete("research") and not await teams.delete("research")
    assert await teams.get("research") is None


async def test_a_failed_transaction_leaves_nothing(db: Database) -> None:
    keys = KeyStore(db, HASHER, Clock())
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await KeyStore(tx, HASHER).create(name="lost")
            raise RuntimeError("abort")
    assert await keys.list() == []
