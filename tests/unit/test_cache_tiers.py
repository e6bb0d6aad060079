"""Tiered read-through, back-fill, TTL and failure isolation; stream assemble and replay."""

from __future__ import annotations

import logging

import pytest
from clocks import ManualClock

from noa.cache.memory import MemoryTier, TtlLru
from noa.cache.replay import assemble, replay
from noa.cache.tiers import TieredCache


class Clock(ManualClock):
    start = 0.0


class BrokenTier:
    """A tier whose backend went away (and may come back)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.broken = True
        self.calls = 0
        self.data: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        self.calls += 1
        if self.broken:
            raise ConnectionError("connection refused")
        return self.data.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self.calls += 1
        if self.broken:
            raise ConnectionError("connection refused")
        self.data[key] = value


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


async def test_a_tier_that_fails_is_left_out_for_a_while_then_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    l1, _, l3 = tiers(clock)
    broken = BrokenTier("l2")
    cache = TieredCache([l1, broken, l3], [10, 60, 3600], retry_after_s=5, clock=clock)
    with caplog.at_level(logging.WARNING, "noa.cache"):
        await cache.set("k", b"v")
        clock.now = 20  # past L1's TTL, and past L2's cool-down
        hit = await cache.get("k")
        assert hit is not None and hit.tier == "l3"
        assert cache.stats["l2"].errors == 2  # the set, then the get; the back-fill skipped it
        for _ in range(10):  # within the cool-down: not even tried
            await cache.get("other")
        assert broken.calls == 2 and cache.stats["l2"].skipped == 11
        broken.broken = False
        clock.now = 26
        await cache.set("k2", b"w")
        assert broken.data == {"k2": b"w"}
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "left out" in m]) == 1  # one warning, not one per call
    assert any("is back" in m for m in messages)


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
