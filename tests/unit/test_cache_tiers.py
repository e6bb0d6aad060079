"""Tiered read-through, back-fill, TTL, failure isolation and single flight; stream replay."""

from __future__ import annotations

import asyncio

import pytest

from noa.cache_replay import assemble, replay
from noa.cache_store import TtlLru
from noa.cache_tiers import MemoryTier, TieredCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class BrokenTier:
    """A tier whose backend went away."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def get(self, key: str) -> bytes | None:
        raise ConnectionError("connection refused")

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        raise ConnectionError("connection refused")


def tiers(clock: Clock) -> tuple[MemoryTier, MemoryTier, MemoryTier]:
    return (
        MemoryTier(TtlLru(2, 10, clock), 10, "l1"),
        MemoryTier(TtlLru(100, 60, clock), 60, "l2"),
        MemoryTier(TtlLru(100, 3600, clock), 3600, "l3"),
    )


async def test_a_lower_tier_hit_back_fills_the_faster_ones() -> None:
    clock = Clock()
    l1, l2, l3 = tiers(clock)
    cache = TieredCache([l1, l2, l3], [10, 60, 3600])
    await l3.set("k", b"answer", 3600)
    hit = await cache.get("k")
    assert hit is not None and (hit.value, hit.tier) == (b"answer", "l3")
    assert await l1.get("k") == b"answer" and await l2.get("k") == b"answer"
    hit = await cache.get("k")
    assert hit is not None and hit.tier == "l1"
    assert (cache.stats["l1"].hits, cache.stats["l1"].misses, cache.stats["l3"].hits) == (1, 1, 1)


async def test_each_tier_keeps_its_own_ttl_and_size_bound() -> None:
    clock = Clock()
    l1, l2, l3 = tiers(clock)
    cache = TieredCache([l1, l2, l3], [10, 60, 3600])
    await cache.set("k", b"v")
    clock.now = 30  # past L1's TTL, within L2's
    hit = await cache.get("k")
    assert hit is not None and hit.tier == "l2"
    clock.now = 1000  # past L2's (and the back-filled L1's), within L3's
    hit = await cache.get("k")
    assert hit is not None and hit.tier == "l3"
    for key in ("a", "b", "c"):
        await cache.set(key, b"x")
    assert await l1.get("a") is None and await l1.get("c") == b"x"  # L1 holds 2


async def test_a_tier_that_fails_is_skipped_and_counted() -> None:
    clock = Clock()
    l1, _, l3 = tiers(clock)
    cache = TieredCache([l1, BrokenTier("l2"), l3], [10, 60, 3600])
    await cache.set("k", b"v")
    clock.now = 20
    hit = await cache.get("k")
    assert hit is not None and hit.tier == "l3"
    assert cache.stats["l2"].errors == 3  # set, get, back-fill


async def test_concurrent_identical_misses_share_one_call() -> None:
    cache = TieredCache([], [])
    calls = 0
    release = asyncio.Event()

    async def upstream() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "answer"

    waiters = [asyncio.ensure_future(cache.single_flight("k", upstream)) for _ in range(10)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters)
    assert calls == 1
    assert [r for r, _ in results] == ["answer"] * 10
    assert sum(shared for _, shared in results) == 9


async def test_a_failed_flight_fails_its_waiters_and_the_next_call_retries() -> None:
    cache = TieredCache([], [])
    release = asyncio.Event()

    async def failing() -> str:
        await release.wait()
        raise ValueError("upstream down")

    waiters = [asyncio.ensure_future(cache.single_flight("k", failing)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    for waiter in waiters:
        with pytest.raises(ValueError):
            await waiter

    async def ok() -> str:
        return "fine"

    assert await cache.single_flight("k", ok) == ("fine", False)


def _chunk(delta: dict, finish: str | None = None) -> dict:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


CALL = {"index": 0, "id": "t1", "type": "function", "function": {"name": "get"}}
CHUNKS = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Hel"}),
    _chunk({"content": "lo"}),
    _chunk({"tool_calls": [{**CALL, "function": {"name": "get", "arguments": '{"a"'}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}, "tool_calls"),
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    },
]


def test_chunks_assemble_into_the_body_and_replay_into_equal_content() -> None:
    body = assemble(CHUNKS)
    message = body["choices"][0]["message"]
    assert body["object"] == "chat.completion" and message["content"] == "Hello"
    assert message["tool_calls"] == [
        {"id": "t1", "type": "function", "function": {"name": "get", "arguments": '{"a": 1}'}}
    ]
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["usage"]["total_tokens"] == 7
    # replayed and re-assembled: the same answer
    assert assemble(replay(body)) == body


def test_text_completions_round_trip() -> None:
    body = {
        "id": "t",
        "object": "text_completion",
        "created": 2,
        "model": "m",
        "choices": [{"index": 0, "text": "once upon", "finish_reason": "length", "logprobs": None}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    assert assemble(replay(body)) == body
