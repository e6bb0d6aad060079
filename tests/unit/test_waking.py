"""The job runner's wake-ups: one call on its way at a time, and one more after it when more
were asked for meanwhile (never a job left to the runner's next poll)."""

from __future__ import annotations

import asyncio

from noa.jobs.waking import Waker


async def test_a_burst_costs_two_calls_and_the_last_ask_is_always_heard() -> None:
    calls: list[int] = []
    release = asyncio.Event()

    async def wake() -> None:
        calls.append(len(calls))
        await release.wait()

    waker = Waker(wake)
    waker()
    await asyncio.sleep(0)  # the first call is on its way (held)
    for _ in range(50):  # jobs stored meanwhile
        waker()
    assert calls == [0]
    release.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert calls == [0, 1]  # one more for all fifty, after the first ended
    waker()  # later: a call of its own, at once
    await asyncio.sleep(0)
    assert calls == [0, 1, 2]


async def test_nothing_asked_meanwhile_makes_no_second_call() -> None:
    calls: list[str] = []

    async def wake() -> None:
        calls.append("wake")

    waker = Waker(wake)
    waker()
    for _ in range(5):
        await asyncio.sleep(0)
    assert calls == ["wake"]
