"""The cache tiers against real Redis, PostgreSQL and SQLite: round trips, TTLs, size bounds,
back-fill across all three, and a store going away (killed mid-test) costing no request."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as redis
from clocks import ManualClock

from noa.cache.memory import MemoryTier, TtlLru
from noa.cache.redis import FLIGHT, PREFIX, RedisTier
from noa.cache.sql import SqlTier
from noa.cache.tiers import TieredCache
from noa.storage.db import LazyDatabase
from noa.storage.migrations import migrate
from noa.testing.ports import free_port


def service(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite through ./scripts/test.sh")
    return value


class Clock(ManualClock):
    start = 1_000_000.0


class PrivateRedis:
    """A redis-server of this test's own, so it can be killed (and started again on the same
    port) without touching the suite's."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run the suite through ./scripts/test.sh")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.05)  # waiting for a process, not for a clock
        pytest.fail("the private redis-server did not start")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    yield server
    server.kill()


@pytest.fixture
async def redis_tier() -> AsyncIterator[RedisTier]:
    tier = RedisTier(service("NOA_TEST_REDIS_URL"))
    yield tier
    await tier.aclose()


async def open_sql(store: str, tmp_path: Path) -> tuple[SqlTier, Clock]:
    """An empty cache table in PostgreSQL, or a new SQLite file; at most 5 entries kept."""
    clock = Clock()
    if store == "sqlite":
        db = LazyDatabase(f"sqlite:///{tmp_path}/cache.db", migrate)
        return SqlTier(db, max_entries=5, clock=clock), clock
    tier = SqlTier(
        LazyDatabase(service("NOA_TEST_POSTGRES_DSN"), migrate), max_entries=5, clock=clock
    )
    await tier.db.execute("TRUNCATE noa_response_cache")
    return tier, clock


@pytest.fixture
async def pg_tier(tmp_path: Path) -> AsyncIterator[tuple[SqlTier, Clock]]:
    tier, clock = await open_sql("postgres", tmp_path)
    yield tier, clock
    await tier.db.close()


@pytest.fixture
async def sqlite_tier(tmp_path: Path) -> AsyncIterator[tuple[SqlTier, Clock]]:
    tier, clock = await open_sql("sqlite", tmp_path)
    yield tier, clock
    await tier.db.close()


def key() -> str:
    return uuid.uuid4().hex


async def test_redis_round_trip_with_the_ttl_set_on_the_entry(redis_tier: RedisTier) -> None:
    k = key()
    assert await redis_tier.get(k) is None
    await redis_tier.set(k, b"\x00answer\xff", 30)
    assert await redis_tier.get(k) == b"\x00answer\xff"
    raw = redis.Redis.from_url(service("NOA_TEST_REDIS_URL"))
    try:
        ttl_ms = await raw.pttl(PREFIX + k)
    finally:
        await raw.aclose()
    assert 25_000 < ttl_ms <= 30_000


async def test_redis_flight_leases_lead_wait_renew_end_and_lapse(redis_tier: RedisTier) -> None:
    k = key()
    raw = redis.Redis.from_url(service("NOA_TEST_REDIS_URL"))
    try:
        assert await redis_tier.flight(k, "a", 10) == (None, "lead")
        assert 9_000 < await raw.pttl(FLIGHT + k) <= 10_000
        assert await redis_tier.flight(k, "b", 10) == (None, "wait")
        assert await redis_tier.flight(k, "a", 30) == (None, "lead")  # renewed by its holder
        assert 29_000 < await raw.pttl(FLIGHT + k) <= 30_000
        await redis_tier.flight_done(k, "b", 5)  # not b's to end
        assert await redis_tier.flight(k, "b", 10) == (None, "wait")
        await redis_tier.flight_done(k, "a", 5)
        assert await redis_tier.flight(k, "b", 10) == (None, "done")
        assert 4_000 < await raw.pttl(FLIGHT + k) <= 5_000  # the done mark lingers briefly
        await raw.delete(FLIGHT + k)  # lapsed
        assert await redis_tier.flight(k, "b", 10) == (None, "lead")
        await redis_tier.set(k, b"entry", 30)
        assert await redis_tier.flight(k, "c", 10) == (b"entry", "done")  # stored: no wait
    finally:
        await raw.aclose()


@pytest.mark.parametrize("store", ["postgres", "sqlite"])
async def test_sql_round_trip_expiry_and_size_bound(store: str, tmp_path: Path) -> None:
    tier, clock = await open_sql(store, tmp_path)
    await tier.set("a", b"first", 10)
    await tier.set("a", b"second", 10)  # replaces
    assert await tier.get("a") == b"second"
    clock.now += 11
    assert await tier.get("a") is None  # expired: never served

    for i in range(8):
        clock.now += 1
        await tier.set(f"k{i}", str(i).encode(), 100)
    await tier.prune()
    kept = [i for i in range(8) if await tier.get(f"k{i}") is not None]
    await tier.db.close()
    assert kept == [3, 4, 5, 6, 7]  # the newest max_entries


async def test_a_postgres_hit_back_fills_redis_and_memory(
    redis_tier: RedisTier, pg_tier: tuple[SqlTier, Clock]
) -> None:
    sql, _ = pg_tier
    memory = MemoryTier(TtlLru(10, 60), 60)
    cache = TieredCache([memory, redis_tier, sql], [60, 600, 6000])
    k = key()
    await sql.set(k, b"persisted", 6000)
    hit = await cache.get(k)
    assert hit is not None and (hit.value, hit.tier) == (b"persisted", "l3")
    assert await redis_tier.get(k) == b"persisted"
    assert await memory.get(k) == b"persisted"
    again = await cache.get(k)
    assert again is not None and again.tier == "l1"


async def test_redis_killed_mid_test_degrades_to_the_other_tiers(
    private_redis: PrivateRedis, sqlite_tier: tuple[SqlTier, Clock]
) -> None:
    sql, _ = sqlite_tier
    l2 = RedisTier(private_redis.url, timeout_s=0.3)
    cache = TieredCache([MemoryTier(TtlLru(10, 60), 60), l2, sql], [60, 600, 6000])
    await cache.set("before", b"one")
    assert await l2.get("before") == b"one"

    private_redis.kill()
    await cache.set("after", b"two")  # L2 fails, L1 and L3 still take it
    assert cache.stats["l2"].errors >= 1
    fresh_l1 = TieredCache([MemoryTier(TtlLru(10, 60), 60), l2, sql], [60, 600, 6000])
    hit = await fresh_l1.get("after")
    assert hit is not None and (hit.value, hit.tier) == (b"two", "l3")
    hit = await fresh_l1.get("before")
    assert hit is not None and hit.tier == "l3"
    # one failure, then left out for a while instead of timing out on every call
    assert (fresh_l1.stats["l2"].errors, fresh_l1.stats["l2"].skipped) == (1, 3)
    await l2.aclose()


async def test_a_database_that_is_down_costs_only_its_tier() -> None:
    dead = SqlTier(LazyDatabase(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", migrate))
    cache = TieredCache([MemoryTier(TtlLru(10, 60), 60), dead], [60, 600])
    await cache.set("k", b"v")
    assert await cache.get("k") is not None
    assert await cache.get("other") is None
    assert (cache.stats["l3"].errors, cache.stats["l3"].skipped) == (1, 1)


async def test_postgres_restarting_reconnects(pg_tier: tuple[SqlTier, Clock]) -> None:
    """A connection the server dropped is replaced on the next call."""
    sql, _ = pg_tier
    await sql.set("x", b"1", 60)
    admin = await asyncpg.connect(service("NOA_TEST_POSTGRES_DSN"))
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND datname = current_database()"
        )
    finally:
        await admin.close()
    await asyncio.sleep(0)  # nothing to wait for: the next calls see the closed connection
    for _ in range(3):
        try:
            if await sql.get("x") == b"1":
                break
        except Exception:  # the first call may meet the dead connection; the tier resets it
            continue
    assert await sql.get("x") == b"1"
