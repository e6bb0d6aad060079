"""Single flight across replicas: the lease table, the join protocol (clock and sleep
injected), and two response caches ("replicas") sharing one L2 that make one upstream call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from planned import ask
from test_response_cache import FakeRouter, chat, drained, registry, settled

from noa.cache.flight import Lease, Leases, MemoryFlights, SharedFlights, State
from noa.cache.memory import MemoryTier, TtlLru
from noa.cache.response import ResponseCache
from noa.cache.tiers import TieredCache
from noa.config import CacheConfig
from noa.errors import UpstreamError
from noa.routing.results import PrimedStream, Routed
from noa.service import NoaService


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class SharedTier:
    """An L2 in memory with a lease board, as the CacheActor keeps them (or Redis)."""

    name = "l2"

    def __init__(self, clock: Clock | None = None) -> None:
        self.store = TtlLru(100, 60)
        self.board = MemoryFlights(self.store, Leases(clock) if clock else Leases())
        self.fail = False
        self.calls = 0

    async def get(self, key: str) -> bytes | None:
        value = self.store.get(key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self.store.set(key, value, ttl_s)

    async def flight(self, key: str, owner: str, lease_s: float) -> tuple[bytes | None, State]:
        self.calls += 1
        if self.fail:
            raise ConnectionError("shared tier gone")
        return self.board.flight(key, owner, lease_s)

    async def flight_done(self, key: str, owner: str, linger_s: float) -> None:
        self.board.flight_done(key, owner, linger_s)


# -- the lease table ------------------------------------------------------------------------------


def test_a_lease_is_held_renewed_by_its_owner_marked_done_and_lapses() -> None:
    clock = Clock()
    leases = Leases(clock)
    assert leases.claim("k", "a", 10) == "lead"
    assert leases.claim("k", "b", 10) == "wait"
    clock.now += 8
    assert leases.claim("k", "a", 10) == "lead"  # renewed
    clock.now += 8
    assert leases.claim("k", "b", 10) == "wait"  # still held: the renewal counted
    leases.done("k", "b", 5)  # not b's to end
    assert leases.claim("k", "b", 10) == "wait"
    leases.done("k", "a", 5)
    assert leases.claim("k", "b", 10) == "done"
    clock.now += 5
    assert leases.claim("k", "b", 10) == "lead"  # the done mark lingers, then goes
    clock.now += 10
    assert leases.claim("k", "c", 10) == "lead"  # b stopped renewing: lapsed


def test_the_lease_table_stays_bounded() -> None:
    clock = Clock()
    leases = Leases(clock, max_leases=3)
    for key in "abc":
        leases.claim(key, "o", 1)
    clock.now += 2
    leases.claim("d", "o", 10)
    assert len(leases) == 1  # the lapsed ones went first
    for key in "efg":
        leases.claim(key, "o", 10)
    assert len(leases) == 3


def test_a_stored_entry_answers_a_claim() -> None:
    board = MemoryFlights(TtlLru(10, 60))
    board.store.set("k", b"entry")
    assert board.flight("k", "a", 10) == (b"entry", "done")


# -- joining --------------------------------------------------------------------------------------


def flights(tier: SharedTier, clock: Clock, owner: str) -> SharedFlights:
    return SharedFlights(tier, owner=owner, clock=clock, sleep=clock.sleep, lease_s=10)


async def test_the_second_replica_waits_for_the_first_ones_entry() -> None:
    clock = Clock()
    tier = SharedTier(clock)
    a, b = flights(tier, clock, "a"), flights(tier, clock, "b")
    lease = await a.join("k")
    assert isinstance(lease, Lease)
    waiting = asyncio.ensure_future(b.join("k"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiting.done()
    await tier.set("k", b"answer", 60)
    await lease.end()
    assert await waiting == b"answer"
    assert a.counts["led"] == 1 and b.counts["joined"] == 1


async def test_a_holder_that_ends_without_an_entry_releases_its_waiters_at_once() -> None:
    clock = Clock()
    tier = SharedTier(clock)
    a, b = flights(tier, clock, "a"), flights(tier, clock, "b")
    lease = await a.join("k")
    assert isinstance(lease, Lease)
    waiting = asyncio.ensure_future(b.join("k"))
    await asyncio.sleep(0)
    began = clock.now
    await lease.end()
    assert await waiting is None  # go upstream yourself
    assert clock.now - began < 1


async def test_a_holder_that_dies_frees_the_key_within_its_lease() -> None:
    clock = Clock()
    tier = SharedTier(clock)
    a, b = flights(tier, clock, "a"), flights(tier, clock, "b")
    lease = await a.join("k")
    assert isinstance(lease, Lease) and lease.renewal is not None
    lease.renewal.cancel()  # the replica is gone: nobody renews
    began = clock.now
    taken = await b.join("k")
    assert isinstance(taken, Lease)
    assert 10 <= clock.now - began < 11
    await taken.end()


async def test_a_renewed_lease_outlives_its_first_term() -> None:
    clock = Clock()
    tier = SharedTier(clock)
    a, b = flights(tier, clock, "a"), flights(tier, clock, "b")
    lease = await a.join("k")
    assert isinstance(lease, Lease)
    b.max_wait_s = 35
    assert await b.join("k") is None  # waited out, while a kept renewing
    assert b.counts["waited_out"] == 1
    await lease.end()


async def test_a_failing_board_is_left_out_for_a_while() -> None:
    clock = Clock()
    tier = SharedTier(clock)
    a = flights(tier, clock, "a")
    tier.fail = True
    assert await a.join("k") is None
    assert await a.join("k") is None
    assert tier.calls == 1 and a.counts["errors"] == 1
    tier.fail = False
    clock.now += 5
    lease = await a.join("k")
    assert isinstance(lease, Lease)
    await lease.end()


# -- two replicas ---------------------------------------------------------------------------------


async def _yield(_seconds: float) -> None:
    await asyncio.sleep(0)


def replica(tier: SharedTier, router: FakeRouter, clock: Clock) -> NoaService:
    """A gateway replica's cache: its own L1, the shared L2; time stands still while its
    waiters poll (they yield to the loop instead of sleeping)."""
    config = CacheConfig()
    models = registry()
    tiers = TieredCache([MemoryTier(TtlLru(100, 60), 60), tier], [60, 60])
    joins = SharedFlights(tier, owner=str(id(tiers)), clock=clock, sleep=_yield)
    return NoaService(router, models, ResponseCache(tiers, config, joins))


async def test_identical_misses_on_two_replicas_make_one_upstream_call() -> None:
    clock, tier, router = Clock(), SharedTier(), FakeRouter()
    a, b = replica(tier, router, clock), replica(tier, router, clock)
    router.gate = asyncio.Event()
    waiting = [asyncio.ensure_future(ask(s, chat("same"))) for s in (a, b) * 10]
    await asyncio.sleep(0.01)
    router.gate.set()
    results: list[Any] = await asyncio.gather(*waiting)
    await settled(a)
    await settled(b)
    assert len(router.calls) == 1
    assert {r.body["choices"][0]["message"]["content"] for r in results} == {"echo: same"}
    # one made the call; the others answered from it without a call of their own
    assert sorted(r.info.cache for r in results) == ["hit-flight"] * 19 + ["miss"]
    across = [s.cache.counts["shared_across"] for s in (a, b) if s.cache is not None]
    assert sorted(across) == [0, 1]
    again = await ask(b, chat("same"))
    assert isinstance(again, Routed) and again.info.cache == "hit-l1"  # back-filled


async def test_a_stream_on_one_replica_answers_a_stream_on_the_other() -> None:
    clock, tier, router = Clock(), SharedTier(), FakeRouter()
    a, b = replica(tier, router, clock), replica(tier, router, clock)
    router.gate = asyncio.Event()
    first = asyncio.ensure_future(ask(a, chat("s t", stream=True)))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(ask(b, chat("s t", stream=True)))
    await asyncio.sleep(0.01)
    router.gate.set()
    leader = await first
    assert isinstance(leader, PrimedStream)
    original = await drained(leader)
    follower = await second
    assert isinstance(follower, PrimedStream)
    assert await drained(follower) == original
    assert len(router.calls) == 1


async def test_when_the_holder_fails_the_other_replica_goes_upstream() -> None:
    clock, tier, router = Clock(), SharedTier(), FakeRouter()
    a, b = replica(tier, router, clock), replica(tier, router, clock)
    router.gate = asyncio.Event()
    router.failures = 1
    first = asyncio.ensure_future(ask(a, chat("f")))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(ask(b, chat("f")))
    await asyncio.sleep(0.01)
    router.gate.set()
    with pytest.raises(UpstreamError):
        await first
    result = await second
    assert isinstance(result, Routed) and result.info.cache == "miss"
    assert len(router.calls) == 2


async def test_a_shared_tier_that_fails_costs_only_the_shared_flight() -> None:
    clock, tier, router = Clock(), SharedTier(), FakeRouter()
    a = replica(tier, router, clock)
    tier.fail = True
    result = await ask(a, chat("down"))
    assert isinstance(result, Routed) and result.info.cache == "miss"
    assert a.cache is not None and a.cache.flights is not None
    assert a.cache.flights.counts["errors"] == 1


async def test_refresh_on_another_replica_goes_upstream_past_the_stored_entry() -> None:
    clock, tier, router = Clock(), SharedTier(), FakeRouter()
    a, b = replica(tier, router, clock), replica(tier, router, clock)
    await ask(a, chat("r"))
    await settled(a)
    fresh = await ask(b, chat("r"), cache="refresh")
    assert isinstance(fresh, Routed) and fresh.info.cache == "miss"
    assert len(router.calls) == 2
