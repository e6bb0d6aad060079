"""The job runner over the real job store on both databases, with a fake ``execute`` (a plain
async function recording its calls): strict priority order, retries with backoff on an injected
clock, client errors failing at once, dead jobs with every attempt's reason, cancellation while
running, per-model and per-key bounds, 429 back-pressure, two runners on two connections, and a
runner whose lease expired mid-job. No test sleeps on the clock it tests."""

from __future__ import annotations

import asyncio
import pickle
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from noa.errors import (
    AuthenticationError,
    ClientDisconnectedError,
    InvalidRequestError,
    ModelNotFoundError,
    NoaError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from noa.jobs.backoff import backoff_s
from noa.jobs.model import Job, JobSpec, JobStatus, Priority
from noa.jobs.runner import UNEXPECTED, JobRunner, judge
from noa.jobs.store import JobStore
from noa.storage.db import Database

T0 = 1_763_856_000.0
CHAT = "/v1/chat/completions"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


def spec(name: str, model: str = "gpt", **fields: Any) -> JobSpec:
    body = {"model": model, "messages": [{"role": "user", "content": name}]}
    return JobSpec(**({"endpoint": CHAT, "body": body, "metadata": {"name": name}} | fields))


def name(job: Job) -> str:
    return str(job.metadata["name"])


def answer(job: Job, **extra: Any) -> dict[str, Any]:
    return {"object": "chat.completion", "model": job.body["model"], "name": name(job), **extra}


async def never_sleep(seconds: float) -> None:
    raise AssertionError(f"the runner slept {seconds} s")


async def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait (on the real loop, not the tested clock) until ``check()`` holds."""
    for _ in range(int(timeout_s / 0.005)):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out waiting")


def runner(
    store: JobStore, execute: Callable[[Job], Awaitable[dict[str, Any]]], **options: Any
) -> JobRunner:
    base: dict[str, Any] = {
        "owner": "runner-1",
        "clock": store.clock,
        "sleep": never_sleep,
        "rng": random.Random(7),
        "lease_s": 30.0,
        "concurrency": 1,
    }
    return JobRunner(store, execute, **(base | options))


@pytest.mark.parametrize(
    ("error", "action", "hold"),
    [
        (InvalidRequestError("bad"), "fail", None),
        (AuthenticationError("who"), "fail", None),
        (PermissionDeniedError("no"), "fail", None),
        (ModelNotFoundError("none"), "fail", None),
        (PayloadTooLargeError("big"), "fail", None),
        (RateLimitError("slow down", retry_after=3), "retry", "key"),
        (UpstreamRateLimitError("slow down", retry_after=3), "retry", "model"),
        (UpstreamError("5xx"), "retry", None),
        (UpstreamTimeoutError("late"), "retry", None),
        (ServiceUnavailableError("open", retry_after=2), "retry", None),
        (ClientDisconnectedError("gone"), "retry", None),
        (RuntimeError("a bug"), "retry", None),
    ],
)
def test_judge(error: Exception, action: str, hold: str | None) -> None:
    verdict = judge(error)
    assert (verdict.action, verdict.hold) == (action, hold)
    if isinstance(error, NoaError):
        assert verdict.error == error.to_dict()["error"]
        assert verdict.retry_after == error.retry_after
    else:
        assert verdict.error["message"] == UNEXPECTED and "bug" not in str(verdict.error)


async def test_burst_runs_in_strict_priority_order_under_contention(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    for job_name, priority, age in [
        ("low-old", Priority.LOW, 10),
        ("medium-new", Priority.MEDIUM, 1),
        ("medium-old", Priority.MEDIUM, 5),
        ("high", Priority.HIGH, 0),
        ("low-new", Priority.LOW, 2),
    ]:
        await store.submit(spec(job_name, priority=priority, run_at=T0 - age))
    ran: list[str] = []

    async def execute(job: Job) -> dict[str, Any]:
        assert pickle.loads(pickle.dumps(job)) == job  # it crosses a Ray handle in Serve
        ran.append(name(job))
        if name(job) == "high":  # work arriving while the queue is busy goes in its place
            await store.submit(spec("urgent", priority=Priority.HIGH))
            await store.submit(spec("later", priority=Priority.HIGH, run_at=T0 + 60))
        return answer(job)

    assert await runner(store, execute).run_burst() == 6
    assert ran == ["high", "urgent", "medium-old", "medium-new", "low-old", "low-new"]
    done = await store.list(status=JobStatus.COMPLETED, limit=10)
    assert len(done) == 6 and all(j.result == answer(j) for j in done)
    assert [name(j) for j in await store.list(status=JobStatus.QUEUED)] == ["later"]


async def test_retry_with_backoff_on_the_injected_clock_then_success(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    job, _ = await store.submit(spec("flaky", max_attempts=3))
    calls: list[float] = []

    async def execute(job: Job) -> dict[str, Any]:
        calls.append(clock())
        if len(calls) < 3:
            raise UpstreamError("upstream 503", provider="openai")
        return answer(job)

    jobs = runner(store, execute, base_backoff_s=2.0, cap_backoff_s=300.0, rng=random.Random(3))
    expected = random.Random(3)
    delays = [backoff_s(n, 2.0, 300.0, rng=expected) for n in (0, 1)]
    assert 2.0 <= delays[0] <= 2.6 and 4.0 <= delays[1] <= 5.2

    assert await jobs.run_burst() == 0  # retried: not finished
    queued = await store.get(job.id)
    assert queued is not None and queued.status is JobStatus.QUEUED
    assert queued.run_at == pytest.approx(T0 + delays[0])
    assert queued.error is not None and queued.error["code"] == "upstream_error"

    clock.tick(delays[0] - 0.01)  # not due yet
    assert await jobs.run_burst() == 0 and len(calls) == 1
    clock.tick(0.01)
    assert await jobs.run_burst() == 0
    again = await store.get(job.id)
    assert again is not None and again.run_at == pytest.approx(clock() + delays[1])
    clock.tick(delays[1])
    assert await jobs.run_burst() == 1

    done = await store.get(job.id)
    assert done is not None and done.status is JobStatus.COMPLETED
    assert done.result == answer(job) and done.error is None and done.attempts == 3
    assert calls == pytest.approx([T0, T0 + delays[0], T0 + delays[0] + delays[1]])
    assert [a.outcome for a in await store.attempts(job.id)] == ["retried", "retried", "completed"]


@pytest.mark.parametrize(
    "error",
    [
        InvalidRequestError("messages must not be empty", param="messages"),
        ModelNotFoundError("The model 'nope' does not exist"),
        PermissionDeniedError("this key may not use the model"),
        PayloadTooLargeError("too large"),
    ],
)
async def test_client_error_fails_at_once_with_its_error(db: Database, error: NoaError) -> None:
    store = JobStore(db, Clock())
    job, _ = await store.submit(spec("bad", max_attempts=5))
    finished: list[Job] = []

    async def execute(job: Job) -> dict[str, Any]:
        raise error

    async def on_finished(job: Job) -> None:
        finished.append(job)

    assert await runner(store, execute, on_finished=on_finished).run_burst() == 1
    failed = await store.get(job.id)
    assert failed is not None and failed.status is JobStatus.FAILED and failed.attempts == 1
    assert failed.error == error.to_dict()["error"] and failed.result is None
    (attempt,) = await store.attempts(job.id)
    assert attempt.outcome == "failed" and attempt.error == failed.error
    assert finished == [failed]  # the hook sees the stored job


async def test_retries_exhausted_is_dead_with_every_reason(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    job, _ = await store.submit(spec("doomed", max_attempts=3))
    errors: list[Exception] = [
        UpstreamTimeoutError("timed out after 60 s"),
        ServiceUnavailableError("all providers failed", retry_after=1.0),
        KeyError("a secret detail of a bug"),
    ]
    finished: list[Job] = []

    async def execute(job: Job) -> dict[str, Any]:
        raise errors[job.attempts - 1]

    async def on_finished(job: Job) -> None:
        finished.append(job)

    jobs = runner(store, execute, on_finished=on_finished)
    results = []
    for _ in range(3):
        results.append(await jobs.run_burst())
        clock.tick(300)
    assert results == [0, 0, 1]
    dead = await store.get(job.id)
    assert dead is not None and dead.status is JobStatus.DEAD and dead.attempts == 3
    attempts = await store.attempts(job.id)
    assert [a.outcome for a in attempts] == ["retried", "retried", "dead"]
    assert [a.error and a.error["code"] for a in attempts] == [
        "upstream_timeout",
        "service_unavailable",
        None,
    ]
    assert attempts[2].error is not None and attempts[2].error["message"] == UNEXPECTED
    assert "secret" not in str(attempts) and dead.error == attempts[2].error
    assert [j.status for j in finished] == [JobStatus.DEAD]
    assert await jobs.run_burst() == 0  # dead stays dead


async def test_cancel_while_running_abandons_the_run_and_writes_nothing(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    job, _ = await store.submit(spec("long", priority=Priority.HIGH))
    after, _ = await store.submit(spec("next"))
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def execute(job: Job) -> dict[str, Any]:
        if name(job) == "long":
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return answer(job)

    jobs = runner(store, execute, lease_s=30.0)
    burst = asyncio.create_task(jobs.run_burst())
    await asyncio.wait_for(started.wait(), 10)
    clock.tick(20)
    assert await jobs.heartbeat() == 0  # still ours: the lease is extended
    running = await store.get(job.id)
    assert running is not None and running.lease_expires_at == T0 + 20 + 30

    await store.cancel(job.id)
    assert await jobs.heartbeat() == 1
    assert await asyncio.wait_for(burst, 10) == 1  # only "next" finished
    assert cancelled.is_set()
    gone = await store.get(job.id)
    assert gone is not None and gone.status is JobStatus.CANCELLED and gone.result is None
    assert [a.outcome for a in await store.attempts(job.id)] == ["cancelled"]
    nxt = await store.get(after.id)
    assert nxt is not None and nxt.status is JobStatus.COMPLETED


async def test_per_model_and_per_key_bounds_are_never_exceeded(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    for i in range(30):
        clock.tick()  # claimed in this order (the same instant would order them by id)
        await store.submit(spec(f"j{i}", model="abc"[i % 3], key_id=f"key_{i % 2}"))
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    async def execute(job: Job) -> dict[str, Any]:
        names = ("all", f"model {job.body['model']}", f"key {job.key_id}")
        running.update(names)
        for n in names:
            peak[n] = max(peak[n], running[n])
        for _ in range(5):
            await asyncio.sleep(0)
        running.subtract(names)
        return answer(job)

    jobs = runner(store, execute, concurrency=8, per_model=2, per_key=3)
    assert await jobs.run_burst() == 30
    assert peak["all"] <= 6  # three models, two each: 6 < 8; keys: 2 x 3 = 6
    assert all(peak[f"model {m}"] == 2 for m in "abc"), peak  # reached, never exceeded
    assert all(peak[f"key key_{k}"] <= 3 for k in (0, 1))
    assert peak["all"] > 2  # they did run concurrently
    assert (await store.depth())["completed"] == 30


@pytest.mark.parametrize(
    ("error", "held"),
    [
        (UpstreamRateLimitError("upstream says 429", retry_after=30.0), "model"),
        (RateLimitError("key's rpm exhausted", retry_after=30.0), "key"),
    ],
)
async def test_429_is_back_pressure(db: Database, error: NoaError, held: str) -> None:
    """A 429 on A retries A after retry_after and holds back B (the same model, or key) until
    then, while C (another model, or key) runs at once."""
    clock = Clock()
    store = JobStore(db, clock)
    same, other = ({"model": "m"}, {"model": "n"}) if held == "model" else ({}, {})
    keys = ({"key_id": "key_1"}, {"key_id": "key_2"}) if held == "key" else ({}, {})
    await store.submit(spec("A", priority=Priority.HIGH, **same, **keys[0]))
    await store.submit(spec("B", priority=Priority.MEDIUM, **same, **keys[0]))
    await store.submit(spec("C", priority=Priority.LOW, **other, **keys[1]))
    calls: list[tuple[str, float]] = []
    sleeps: list[float] = []
    released = asyncio.Event()

    async def execute(job: Job) -> dict[str, Any]:
        calls.append((name(job), clock()))
        if len(calls) == 1:
            raise error
        return answer(job)

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await released.wait()

    jobs = runner(store, execute, sleep=sleep, concurrency=2, base_backoff_s=1.0)
    burst = asyncio.create_task(jobs.run_burst())
    await until(lambda: len(calls) == 2 and bool(sleeps))
    assert calls == [("A", T0), ("C", T0)]  # B waits out the 429, C does not
    assert sleeps == [30.0]
    (a,) = await store.list(status=JobStatus.QUEUED)
    assert name(a) == "A" and a.run_at == T0 + 30  # retry_after beats the 1 s backoff
    assert a.error == error.to_dict()["error"]

    clock.tick(30)
    released.set()
    assert await asyncio.wait_for(burst, 10) == 3
    assert calls == [("A", T0), ("C", T0), ("B", T0 + 30), ("A", T0 + 30)]
    assert [at.outcome for at in await store.attempts(a.id)] == ["retried", "completed"]


async def test_a_long_429_hands_held_back_claims_back_unrun(db: Database) -> None:
    """A key out of budget for an hour: its other claimed job goes back to the queue (its
    attempt not counted) instead of waiting in a slot; the other key's job runs."""
    clock = Clock()
    store = JobStore(db, clock)
    a, _ = await store.submit(spec("A", priority=Priority.HIGH, key_id="key_1"))
    b, _ = await store.submit(spec("B", priority=Priority.MEDIUM, key_id="key_1"))
    await store.submit(spec("C", priority=Priority.LOW, key_id="key_2"))
    calls: list[str] = []
    budget = RateLimitError("budget exhausted", code="budget_exceeded", retry_after=3600.0)

    async def execute(job: Job) -> dict[str, Any]:
        calls.append(name(job))
        if len(calls) == 1:
            raise budget
        return answer(job)

    jobs = runner(store, execute, concurrency=2, lease_s=30.0)  # never_sleep: nothing waits
    assert await jobs.run_burst() == 1
    assert calls == ["A", "C"]
    back = await store.get(b.id)
    assert back is not None and back.status is JobStatus.QUEUED and back.run_at == T0 + 3600
    assert back.attempts == 0 and back.started_at is None and back.error is None
    (released,) = await store.attempts(b.id)
    assert released.outcome == "released" and released.error == budget.to_dict()["error"]

    clock.tick(3600)
    assert await jobs.run_burst() == 2
    assert calls == ["A", "C", "A", "B"]
    done = await store.get(b.id)
    assert done is not None and done.status is JobStatus.COMPLETED and done.attempts == 1
    assert [at.outcome for at in await store.attempts(b.id)] == ["released", "completed"]
    assert [at.outcome for at in await store.attempts(a.id)] == ["retried", "completed"]


async def test_two_runners_run_each_job_exactly_once(db: Database, other: Database) -> None:
    clock = Clock()
    stores = [JobStore(db, clock), JobStore(other, clock)]
    ids = [(await stores[i % 2].submit(spec(f"j{i}")))[0].id for i in range(50)]
    executed: list[tuple[str, str]] = []

    def executor(owner: str) -> Callable[[Job], Awaitable[dict[str, Any]]]:
        async def execute(job: Job) -> dict[str, Any]:
            executed.append((owner, job.id))
            await asyncio.sleep(0.005)  # work (real time: the runners overlap, so both claim)
            return answer(job, by=owner)

        return execute

    runners = [runner(stores[i], executor(f"r{i}"), owner=f"r{i}", concurrency=4) for i in range(2)]
    finished = await asyncio.gather(*(r.run_burst() for r in runners))
    assert sum(finished) == 50
    assert Counter(job_id for _, job_id in executed) == Counter(ids)  # each exactly once
    assert {owner for owner, _ in executed} == {"r0", "r1"}  # both took part
    by_owner = dict((job_id, owner) for owner, job_id in executed)
    for job_id in ids:
        job = await stores[0].get(job_id)
        assert job is not None and job.status is JobStatus.COMPLETED and job.attempts == 1
        assert job.result is not None and job.result["by"] == by_owner[job_id]
        assert [a.outcome for a in await stores[0].attempts(job_id)] == ["completed"]


async def test_result_of_a_runner_whose_lease_expired_is_refused(
    db: Database, other: Database
) -> None:
    clock = Clock()
    first, second = JobStore(db, clock), JobStore(other, clock)
    job, _ = await first.submit(spec("slow"))
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(job: Job) -> dict[str, Any]:
        started.set()
        await release.wait()  # partitioned, paused, too slow: its heartbeats never came
        return answer(job, by="old")

    async def quick(job: Job) -> dict[str, Any]:
        return answer(job, by="new")

    old = runner(first, slow, owner="old", lease_s=30.0)
    old_burst = asyncio.create_task(old.run_burst())
    await asyncio.wait_for(started.wait(), 10)
    clock.tick(31)  # the old lease is over
    assert await runner(second, quick, owner="new", lease_s=30.0).run_burst() == 1
    release.set()
    assert await asyncio.wait_for(old_burst, 10) == 0  # its result refused

    done = await first.get(job.id)
    assert done is not None and done.status is JobStatus.COMPLETED
    assert done.result == answer(job, by="new")
    attempts = await first.attempts(job.id)
    assert [(a.owner, a.outcome) for a in attempts] == [
        ("old", "lease_expired"),
        ("new", "completed"),
    ]


async def test_run_wakes_on_notify_and_drains_on_stop(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    ran: list[str] = []
    release = asyncio.Event()

    async def execute(job: Job) -> dict[str, Any]:
        ran.append(name(job))
        if name(job) == "last":
            await release.wait()
        return answer(job)

    async def sleep(seconds: float) -> None:  # idle: wait for notify() (never for real)
        await asyncio.Event().wait()

    jobs = runner(store, execute, sleep=sleep, concurrency=4, poll_s=60.0)
    stop = asyncio.Event()
    loop = asyncio.create_task(jobs.run(stop))
    for i in range(5):
        await store.submit(spec(f"j{i}"))
    await store.submit(spec("delayed", run_at=T0 + 3600))
    jobs.notify()
    await until(lambda: len(ran) == 5)
    await store.submit(spec("last"))
    jobs.notify()
    await until(lambda: "last" in ran)
    stop.set()
    await asyncio.sleep(0.05)
    assert not loop.done()  # it lets "last" finish
    release.set()
    await asyncio.wait_for(loop, 10)
    depth = await store.depth()
    assert depth["completed"] == 6 and depth["queued"] == 1 and depth["running"] == 0
    assert "delayed" not in ran


async def test_heartbeats_extend_a_long_jobs_lease(db: Database) -> None:
    """On the real clock: a job running for four lease lengths has its lease extended (every
    lease_s / 3, by the runner's own loop), and ends as one attempt."""
    import time

    store = JobStore(db, time.time)
    job, _ = await store.submit(spec("long"))
    finish = asyncio.Event()

    async def long(job: Job) -> dict[str, Any]:
        await finish.wait()
        return answer(job)

    burst = asyncio.create_task(runner(store, long, clock=time.time, lease_s=0.3).run_burst())
    try:
        expiries: list[float] = []
        for _ in range(12):  # 1.2 s: four leases
            await asyncio.sleep(0.1)
            current = await store.get(job.id)
            assert current is not None and current.status is JobStatus.RUNNING
            if current.lease_expires_at is not None:
                expiries.append(current.lease_expires_at)
        finish.set()
        assert await asyncio.wait_for(burst, 10) == 1
    finally:
        burst.cancel()
        await asyncio.gather(burst, return_exceptions=True)
    assert expiries[-1] > expiries[0] + 0.6  # beaten on, well past the first lease
    assert len(set(expiries)) >= 4
    assert [a.outcome for a in await store.attempts(job.id)] == ["completed"]
