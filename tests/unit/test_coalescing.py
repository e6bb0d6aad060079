"""Coalesced calls: one batch in flight, the calls made meanwhile sent together next, each with
its own answer or its batch's error; and the remote limiter over it, exact under concurrency,
its adjustments not waited for yet ordered before later admits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from noa.access.coalescing import Coalescer
from noa.access.limits import Take
from noa.access.remote import LimiterEndpoint, RemoteLimiter


class Endpoint:
    """Records each batch it is sent; answers each item doubled (a negative one: an error)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await self.gate.wait()
        if any(i < 0 for i in items):
            raise ValueError("negative")
        return [i * 2 for i in items]


async def test_an_idle_call_goes_alone_and_calls_meanwhile_go_together() -> None:
    endpoint = Endpoint()
    call = Coalescer(endpoint.send)
    assert await call(1) == 2
    endpoint.gate.clear()
    first = asyncio.create_task(call(2))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first batch is out, held at the gate
    rest = [asyncio.create_task(call(i)) for i in (3, 4, 5)]
    await asyncio.sleep(0)
    endpoint.gate.set()
    assert await first == 4
    assert [await t for t in rest] == [6, 8, 10]
    assert endpoint.batches == [[1], [2], [3, 4, 5]]


async def test_batches_are_bounded() -> None:
    endpoint = Endpoint()
    call = Coalescer(endpoint.send, max_batch=2)
    assert await asyncio.gather(*(call(i) for i in range(5))) == [0, 2, 4, 6, 8]
    assert endpoint.batches == [[0, 1], [2, 3], [4]]


async def test_an_error_fails_its_own_batch_only() -> None:
    endpoint = Endpoint()
    call = Coalescer(endpoint.send, max_batch=2)
    results = await asyncio.gather(*(call(i) for i in (1, -1, 3, 4)), return_exceptions=True)
    assert isinstance(results[0], ValueError) and isinstance(results[1], ValueError)
    assert results[2:] == [6, 8]
    assert await call(7) == 14  # and it goes on


async def test_a_caller_that_gives_up_leaves_the_others_their_answers() -> None:
    endpoint = Endpoint()
    endpoint.gate.clear()
    call = Coalescer(endpoint.send)
    gone, kept = asyncio.create_task(call(1)), asyncio.create_task(call(2))
    await asyncio.sleep(0)
    gone.cancel()
    endpoint.gate.set()
    assert await kept == 4
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_a_wrong_number_of_answers_is_an_error() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    with pytest.raises(RuntimeError, match="answers"):
        await Coalescer(short)(1)


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Coalescer(Endpoint().send, max_batch=0)


class Method:
    """A handle method: ``.remote(...)`` awaits the endpoint's method (counting the hops)."""

    def __init__(self, fn: Any, hops: list[str], name: str) -> None:
        self.fn, self.hops, self.name = fn, hops, name

    async def remote(self, *args: Any) -> Any:
        self.hops.append(self.name)
        await asyncio.sleep(0.001)  # a hop takes time: calls pile up behind it
        return await self.fn(*args)


class Handle:
    def __init__(self, endpoint: LimiterEndpoint, prefix: str = "") -> None:
        self.hops: list[str] = []
        for name in ("apply_many", "revoke"):
            setattr(self, prefix + name, Method(getattr(endpoint, name), self.hops, name))


async def test_the_remote_limiter_is_exact_under_concurrency_in_few_hops() -> None:
    handle = Handle(LimiterEndpoint(), prefix="limiter_")
    limiter = RemoteLimiter(handle, "limiter_")
    take = [Take("rpm:key:k", 50, 1)]
    decisions = await asyncio.gather(*(limiter.admit(take, [], "k") for _ in range(80)))
    assert sum(d.allowed for d in decisions) == 50  # exactly the limit, no more
    assert all(d.reason == "rpm" for d in decisions if not d.allowed)
    assert len(handle.hops) < 10  # 80 decisions, a few hops
    await limiter.revoke("k")
    refused = await limiter.admit([Take("rpm:key:other", 50, 1)], [], "k")
    assert not refused.allowed and refused.reason == "revoked"


async def test_an_adjust_is_not_waited_for_yet_comes_before_a_later_admit() -> None:
    handle = Handle(LimiterEndpoint(), prefix="limiter_")
    limiter = RemoteLimiter(handle, "limiter_")
    tpm = Take("tpm:key:k", 1000, 1000)
    assert (await limiter.admit([tpm], [], "k")).allowed  # the whole minute reserved
    hops = len(handle.hops)
    await limiter.adjust({"tpm:key:k": (1000, -600)}, {})  # 600 of them refunded
    assert len(handle.hops) == hops  # returned before its hop
    again = await limiter.admit([Take("tpm:key:k", 1000, 500)], [], "k")
    assert again.allowed  # the refund was applied first
    assert (await limiter.admit([Take("tpm:key:k", 1000, 500)], [], "k")).reason == "tpm"


async def test_an_unknown_op_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown limiter op"):
        await LimiterEndpoint().apply_many([("spend", 1)])
