"""The long poll's server side (``wait_until_final``) on an injected clock: a job that ends is
seen soon after (at most ~20% of the wait late), a long wait costs few reads, a timeout returns
the job as it stands, and a missing job is None at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from noa.jobs.client import wait_until_final
from noa.jobs.model import JobStatus


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Found:
    status: JobStatus


class Store:
    """A job that is final from ``done_at`` on (None: never); counts its reads."""

    def __init__(self, clock: Clock, done_at: float | None, exists: bool = True) -> None:
        self.clock, self.done_at, self.exists, self.reads = clock, done_at, exists, 0

    async def get(self, job_id: str, key_id: str | None = None) -> Any:
        self.reads += 1
        if not self.exists:
            return None
        done = self.done_at is not None and self.clock.now >= self.done_at
        return Found(JobStatus.COMPLETED if done else JobStatus.RUNNING)


async def test_a_job_that_ends_is_seen_soon_after() -> None:
    for done_at in (0.003, 0.035, 0.2, 3.0, 40.0):
        clock = Clock()
        store = Store(clock, done_at)
        job = await wait_until_final(
            store,  # type: ignore[arg-type]
            "job_1",
            timeout_s=60,
            clock=clock,
            sleep=clock.sleep,
        )
        assert job is not None and job.status is JobStatus.COMPLETED
        assert done_at <= clock.now <= max(done_at * 1.25, done_at + 0.002), (done_at, clock.now)


async def test_a_long_wait_costs_few_reads_and_returns_the_job_as_it_stands() -> None:
    clock = Clock()
    store = Store(clock, None)
    job = await wait_until_final(
        store,  # type: ignore[arg-type]
        "job_1",
        timeout_s=60,
        poll_s=0.5,
        clock=clock,
        sleep=clock.sleep,
    )
    assert job is not None and job.status is JobStatus.RUNNING
    assert clock.now == 60.0
    assert store.reads < 200  # 2 ms at first, then a fifth of the wait, capped at poll_s


async def test_a_missing_job_is_none_at_once() -> None:
    clock = Clock()
    store = Store(clock, None, exists=False)
    assert (
        await wait_until_final(store, "job_x", clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
        is None
    )
    assert store.reads == 1 and clock.now == 0.0
