"""The durable job store on both databases: submitting, listing, idempotency, claims in strict
order and under contention, leases and fencing tokens, retries, dead jobs and redrive,
cancellation and schedules. The clock is injected: no test sleeps."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from noa.jobs.model import JobSpec, JobStatus, Priority
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


def spec(**fields: Any) -> JobSpec:
    base: dict[str, Any] = {
        "endpoint": CHAT,
        "body": {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]},
    }
    return JobSpec(**(base | fields))


async def test_submit_get_list_paginate_and_scope_by_key(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    made = []
    for i in range(5):
        clock.tick()
        job, created = await store.submit(
            spec(key_id="key_a" if i % 2 == 0 else "key_b", metadata={"i": i}, team="red")
        )
        assert created
        made.append(job)
    first = made[0]
    assert first.status is JobStatus.QUEUED and first.run_at == first.created_at == T0 + 1
    got = await store.get(first.id)
    assert got == first
    assert await store.get(first.id, key_id="key_a") == first
    assert await store.get(first.id, key_id="key_b") is None
    assert await store.get("job_nope") is None

    public = first.public()
    assert public["object"] == "job" and public["status"] == "queued"
    assert public["priority"] == "medium" and public["metadata"] == {"i": 0}
    assert public["result"] is None and public["attempts"] == 0 and public["max_attempts"] == 3
    assert set(public) == {
        "id",
        "object",
        "status",
        "endpoint",
        "priority",
        "created_at",
        "started_at",
        "finished_at",
        "attempts",
        "max_attempts",
        "run_at",
        "metadata",
        "result",
        "error",
        "callback_url",
    }

    mine = await store.list("key_a")
    assert [j.id for j in mine] == [made[4].id, made[2].id, made[0].id]  # newest first
    page1 = await store.list(None, limit=2)
    page2 = await store.list(None, limit=2, after=page1[-1].id)
    page3 = await store.list(None, limit=2, after=page2[-1].id)
    assert [j.id for j in page1 + page2 + page3] == [j.id for j in reversed(made)]
    assert await store.list(None, after=page3[-1].id) == []
    assert await store.list("key_c") == []

    await store.cancel(made[1].id)
    assert [j.id for j in await store.list(None, status="cancelled")] == [made[1].id]
    assert [j.id for j in await store.list("key_a", status=JobStatus.CANCELLED)] == []


async def test_same_creation_time_pages_by_id(db: Database) -> None:
    store = JobStore(db, Clock())  # every job at the same instant: the id breaks the tie
    made = [(await store.submit(spec()))[0] for _ in range(5)]
    seen: list[str] = []
    after = None
    while page := await store.list(None, limit=2, after=after):
        seen += [j.id for j in page]
        after = page[-1].id
    assert seen == sorted((j.id for j in made), reverse=True)


async def test_idempotency_key_returns_the_same_job(db: Database) -> None:
    store = JobStore(db, Clock())
    job, created = await store.submit(spec(key_id="key_a", idempotency_key="k1"))
    again, created_again = await store.submit(spec(key_id="key_a", idempotency_key="k1"))
    assert created and not created_again and again == job
    other_key, created = await store.submit(spec(key_id="key_b", idempotency_key="k1"))
    assert created and other_key.id != job.id
    master, created = await store.submit(spec(idempotency_key="k1"))  # the master key: ""
    master_again, created_again = await store.submit(spec(idempotency_key="k1"))
    assert created and not created_again and master_again.id == master.id
    assert master.key_id == ""
    plain = {(await store.submit(spec(key_id="key_a")))[0].id for _ in range(3)}
    assert len(plain) == 3  # no idempotency key: never the same job
    assert len(await store.list(None, limit=100)) == 6


async def test_idempotency_holds_when_replicas_race(db: Database, other: Database) -> None:
    stores = [JobStore(db), JobStore(other)]
    results = await asyncio.gather(
        *(stores[i % 2].submit(spec(key_id="key_a", idempotency_key="race")) for i in range(10))
    )
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_claims_follow_priority_then_run_at_then_age(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)

    async def submit(name: str, priority: Priority, run_at: float | None = None) -> str:
        clock.tick()
        job, _ = await store.submit(spec(priority=priority, run_at=run_at, metadata={"n": name}))
        return job.id

    names = {
        await submit("low-old", Priority.LOW): "low-old",
        await submit("medium-1", Priority.MEDIUM): "medium-1",
        await submit("high-late-run", Priority.HIGH, run_at=T0 + 50): "high-late-run",
        await submit("medium-2", Priority.MEDIUM): "medium-2",
        await submit("high-1", Priority.HIGH): "high-1",
        await submit("high-early-run", Priority.HIGH, run_at=T0 - 100): "high-early-run",
        await submit("high-2", Priority.HIGH): "high-2",
    }
    clock.now = T0 + 100  # all due
    order = []
    while claims := await store.claim("runner", lease_s=30):
        order += [names[c.job.id] for c in claims]
    assert order == [
        "high-early-run",
        "high-1",
        "high-2",
        "high-late-run",
        "medium-1",
        "medium-2",
        "low-old",
    ]


async def test_a_batch_claim_comes_in_order(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    for priority in (Priority.LOW, Priority.HIGH, Priority.MEDIUM, Priority.HIGH):
        clock.tick()
        await store.submit(spec(priority=priority))
    claims = await store.claim("runner", lease_s=30, limit=3)
    assert [c.job.priority for c in claims] == [Priority.HIGH, Priority.HIGH, Priority.MEDIUM]
    assert all(c.token == 1 and c.job.status is JobStatus.RUNNING for c in claims)
    assert claims[0].job.created_at < claims[1].job.created_at
    assert [c.job.priority for c in await store.claim("runner", 30, limit=5)] == [Priority.LOW]


async def test_delayed_job_is_not_claimed_before_run_at(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    job, _ = await store.submit(spec(run_at=T0 + 60))
    assert await store.claim("runner", lease_s=30) == []
    assert await store.claim("runner", lease_s=30, now=T0 + 59.9) == []
    assert await store.next_due() == T0 + 60
    clock.now = T0 + 60
    (claim,) = await store.claim("runner", lease_s=30)
    assert claim.job.id == job.id and claim.job.started_at == T0 + 60
    assert claim.job.lease_expires_at == T0 + 90 and claim.job.lease_owner == "runner"


async def test_concurrent_claimers_never_get_the_same_job(db: Database, other: Database) -> None:
    clock = Clock()
    submitter = JobStore(db, clock)
    for i in range(40):
        await submitter.submit(spec(priority=Priority(i % 3)))
    stores = [JobStore(db, clock), JobStore(other, clock)]
    batches = await asyncio.gather(
        *(stores[i % 2].claim(f"runner-{i % 2}", lease_s=30, limit=2) for i in range(30))
    )
    claimed = [c.job.id for batch in batches for c in batch]
    assert len(claimed) == len(set(claimed))
    claimed += [c.job.id for c in await stores[0].claim("runner-0", lease_s=30, limit=100)]
    assert len(claimed) == len(set(claimed)) == 40
    for job_id in claimed:
        assert [a.token for a in await submitter.attempts(job_id)] == [1]
    assert (await submitter.depth())["running"] == 40


async def test_expired_lease_is_claimed_again_and_the_old_token_is_refused(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    job, _ = await store.submit(spec())
    (first,) = await store.claim("runner-1", lease_s=30)
    clock.tick(29)
    assert await store.claim("runner-2", lease_s=30) == []  # still held
    clock.tick(1)
    (second,) = await store.claim("runner-2", lease_s=30)
    assert second.job.id == job.id and (first.token, second.token) == (1, 2)
    assert second.job.attempts == 2 and second.job.lease_owner == "runner-2"

    assert not await store.heartbeat(job.id, first.token, lease_s=30)
    assert not await store.complete(job.id, first.token, {"from": "runner-1"})
    assert await store.complete(job.id, second.token, {"from": "runner-2"})
    assert not await store.complete(job.id, second.token, {"again": True})
    assert not await store.complete(job.id, first.token, {"from": "runner-1"})
    done = await store.get(job.id)
    assert done is not None and done.status is JobStatus.COMPLETED
    assert done.result == {"from": "runner-2"} and done.error is None
    assert done.finished_at == clock.now and done.lease_owner is None
    attempts = await store.attempts(job.id)
    assert [(a.attempt, a.token, a.owner, a.outcome) for a in attempts] == [
        (1, 1, "runner-1", "lease_expired"),
        (2, 2, "runner-2", "completed"),
    ]
    assert attempts[0].error is not None and attempts[0].error["code"] == "lease_expired"


async def test_heartbeat_keeps_the_lease(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    await store.submit(spec())
    (claim,) = await store.claim("runner-1", lease_s=30)
    clock.tick(20)
    assert await store.heartbeat(claim.job.id, claim.token, lease_s=30)
    assert await store.next_due() == T0 + 50
    clock.tick(20)  # past the first lease, within the extended one
    assert await store.claim("runner-2", lease_s=30) == []
    assert await store.complete(claim.job.id, claim.token, {"ok": True})


async def test_cancel_queued_and_running(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    queued, _ = await store.submit(spec(key_id="key_a"))
    assert await store.cancel(queued.id, key_id="key_b") is None  # not theirs
    cancelled = await store.cancel(queued.id, key_id="key_a")
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    assert cancelled.finished_at == T0
    assert await store.claim("runner", lease_s=30) == []

    running, _ = await store.submit(spec(key_id="key_a"))
    (claim,) = await store.claim("runner", lease_s=30)
    clock.tick()
    after = await store.cancel(running.id)
    assert after is not None and after.status is JobStatus.CANCELLED
    assert not await store.heartbeat(running.id, claim.token, lease_s=30)
    assert not await store.complete(running.id, claim.token, {"late": True})
    assert not await store.retry(running.id, claim.token, "late", run_at=clock.now)
    final = await store.get(running.id)
    assert final is not None and final.status is JobStatus.CANCELLED and final.result is None
    assert [a.outcome for a in await store.attempts(running.id)] == ["cancelled"]
    clock.tick(100)
    assert await store.claim("runner", lease_s=30) == []  # a cancelled job's lease is gone

    again = await store.cancel(running.id)  # a finished job stays as it is
    assert again is not None and again.finished_at == final.finished_at
    assert await store.cancel("job_nope") is None


async def test_retry_requeues_at_run_at(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    job, _ = await store.submit(spec())
    (claim,) = await store.claim("runner", lease_s=30)
    assert await store.retry(job.id, claim.token, "upstream 503", run_at=T0 + 10)
    waiting = await store.get(job.id)
    assert waiting is not None and waiting.status is JobStatus.QUEUED
    assert waiting.run_at == T0 + 10 and waiting.attempts == 1 and waiting.lease_owner is None
    assert waiting.error is not None and waiting.error["message"] == "upstream 503"
    assert not await store.retry(job.id, claim.token, "twice", run_at=T0 + 10)
    assert await store.claim("runner", lease_s=30, now=T0 + 9) == []
    clock.now = T0 + 10
    (second,) = await store.claim("runner", lease_s=30)
    assert second.token == 2 and second.job.attempts == 2
    assert second.job.started_at == T0  # the first start
    assert await store.complete(job.id, second.token, {"ok": 1})
    assert [(a.attempt, a.outcome) for a in await store.attempts(job.id)] == [
        (1, "retried"),
        (2, "completed"),
    ]


async def test_bury_keeps_attempts_and_redrive_queues_again(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    job, _ = await store.submit(spec(max_attempts=2))
    (one,) = await store.claim("runner", lease_s=30)
    assert await store.retry(job.id, one.token, {"message": "503", "type": "upstream"}, T0)
    (two,) = await store.claim("runner", lease_s=30)
    clock.tick(5)
    assert await store.bury(job.id, two.token, "upstream 503 again")
    dead = await store.get(job.id)
    assert dead is not None and dead.status is JobStatus.DEAD and dead.finished_at == T0 + 5
    assert dead.attempts == 2 and dead.error is not None
    assert [(a.outcome, a.error and a.error["message"]) for a in await store.attempts(job.id)] == [
        ("retried", "503"),
        ("dead", "upstream 503 again"),
    ]
    assert (await store.depth())["dead"] == 1
    assert await store.claim("runner", lease_s=30) == []

    clock.tick(5)
    redriven = await store.redrive(job.id)
    assert redriven is not None and redriven.status is JobStatus.QUEUED
    assert (redriven.attempts, redriven.run_at, redriven.error, redriven.finished_at) == (
        0,
        T0 + 10,
        None,
        None,
    )
    assert await store.redrive(job.id) is None  # queued: nothing to redrive
    (three,) = await store.claim("runner", lease_s=30)
    assert three.token == 3 and three.job.attempts == 1
    assert await store.fail(job.id, three.token, {"message": "bad request", "type": "x"})
    failed = await store.get(job.id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert [a.attempt for a in await store.attempts(job.id)] == [1, 2, 3]
    assert (await store.redrive(job.id)) is not None  # failed jobs may be redriven too
    assert await store.redrive("job_nope") is None


async def test_expired_lease_on_the_last_attempt_is_dead(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    job, _ = await store.submit(spec(max_attempts=1))
    (claim,) = await store.claim("runner-1", lease_s=30)
    clock.tick(31)
    assert await store.claim("runner-2", lease_s=30) == []
    dead = await store.get(job.id)
    assert dead is not None and dead.status is JobStatus.DEAD
    assert dead.error is not None and dead.error["message"] == "lease expired"
    assert dead.finished_at == clock.now and dead.attempts == 1
    assert [a.outcome for a in await store.attempts(job.id)] == ["lease_expired"]
    assert not await store.complete(job.id, claim.token, {"late": True})
    assert await store.next_due() is None


async def test_one_job_per_schedule_due_time(db: Database, other: Database) -> None:
    stores = [JobStore(db), JobStore(other)]
    results = await asyncio.gather(
        *(stores[i % 2].submit(spec(schedule_id="nightly", due_at=T0)) for i in range(8))
    )
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    later, created = await stores[0].submit(spec(schedule_id="nightly", due_at=T0 + 86_400))
    assert created and later.id != results[0][0].id
    other_schedule, created = await stores[0].submit(spec(schedule_id="hourly", due_at=T0))
    assert created and other_schedule.schedule_id == "hourly"


async def test_depth_counts_every_status(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    assert await store.depth() == {s.value: 0 for s in JobStatus}
    for _ in range(3):
        await store.submit(spec())
    (claim,) = await store.claim("runner", lease_s=30)
    await store.complete(claim.job.id, claim.token, {"ok": True})
    await store.claim("runner", lease_s=30)
    depth = await store.depth()
    assert (depth["queued"], depth["running"], depth["completed"], depth["dead"]) == (1, 1, 1, 0)


@pytest.mark.parametrize(
    "fields",
    [
        {"endpoint": "/v1/images"},
        {"max_attempts": 0},
        {"max_attempts": 21},
        {"priority": "urgent"},
        {"run_at": float("nan")},
        {"schedule_id": "s"},
        {"body": {"n": 2**70}},
        {"metadata": {"x": float("inf")}},
    ],
)
def test_a_spec_refuses_what_cannot_be_stored(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        spec(**fields)


def test_a_spec_takes_priority_names() -> None:
    assert spec(priority="high").priority is Priority.HIGH
    assert spec(priority=2).priority is Priority.LOW
    assert spec().max_attempts == 3
