"""The reply outbox (``noa/jobs/replies.py``) on SQLite and PostgreSQL: a bridge's job that
ends writes its answer in the same transaction (a dead one a dead letter too), once per
ending; claims hold rows under a lease, a holder that dies leaves them due again, a sent row
goes, a failed publish comes back after its delay; the job store counts a model's queue."""

from __future__ import annotations

from typing import Any

from noa.jobs.model import JobSpec, JobStatus
from noa.jobs.replies import DEAD_LETTER, REPLY, ReplyOutbox
from noa.jobs.store import JobStore
from noa.storage.db import Database


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def spec(message_id: str, reply_to: str | None = "out", model: str = "gpt", **more: Any) -> JobSpec:
    return JobSpec(
        endpoint="/v1/chat/completions",
        body={"model": model, "messages": [{"role": "user", "content": message_id}]},
        metadata={"noa_bridge": "orders", "noa_message_id": message_id, "noa_reply_to": reply_to},
        idempotency_key=f"bridge:orders:{message_id}",
        **more,
    )


async def finish(store: JobStore, how: str) -> str:
    (claim,) = await store.claim("runner", lease_s=30)
    if how == "complete":
        assert await store.complete(claim.job.id, claim.token, {"ok": 1})
    else:
        assert await store.bury(claim.job.id, claim.token, "always fails")
    return claim.job.id


async def test_a_final_job_owes_its_answer_and_a_dead_one_a_dead_letter(db: Database) -> None:
    clock = Clock()
    store, outbox = JobStore(db, clock), ReplyOutbox(db, "orders", clock)
    await store.submit(spec("m-1"))
    done = await finish(store, "complete")
    await store.submit(spec("m-2"))
    dead = await finish(store, "bury")
    await store.submit(spec("m-3", reply_to=None))  # nowhere to answer: no reply row
    await finish(store, "complete")
    await store.submit(JobSpec(endpoint="/v1/chat/completions", body={"model": "gpt"}))
    await finish(store, "complete")  # not a bridge's job: nothing owed
    assert await outbox.pending() == 3
    claimed = await outbox.claim("bridge-1", limit=10)
    assert sorted((r.job.id, r.kind) for r in claimed) == sorted(
        [(done, REPLY), (dead, REPLY), (dead, DEAD_LETTER)]
    )
    assert {r.job.id: r.job.status for r in claimed} == {
        done: JobStatus.COMPLETED, dead: JobStatus.DEAD,
    }  # fmt: skip
    assert all(r.destination == ("out" if r.kind == REPLY else None) for r in claimed)
    assert await outbox.claim("bridge-2") == []  # held
    for r in claimed:
        await outbox.sent(r, "bridge-1")
    assert await outbox.pending() == 0 and await outbox.next_due() is None
    assert await ReplyOutbox(db, "other", clock).pending() == 0


async def test_a_redelivered_message_owes_nothing_more(db: Database) -> None:
    clock = Clock()
    store, outbox = JobStore(db, clock), ReplyOutbox(db, "orders", clock)
    first, created = await store.submit(spec("m-1"))
    assert created
    await finish(store, "complete")
    again, created = await store.submit(spec("m-1"))
    assert not created and again.id == first.id
    assert len(await outbox.claim("bridge-1")) == 1


async def test_a_dead_holder_leaves_its_rows_due_and_a_failure_comes_back(db: Database) -> None:
    clock = Clock()
    store, outbox = JobStore(db, clock), ReplyOutbox(db, "orders", clock)
    await store.submit(spec("m-1"))
    await finish(store, "complete")
    (held,) = await outbox.claim("doomed", lease_s=30)
    clock.now += 29
    assert await outbox.claim("other") == []
    clock.now += 2  # the lease ran out: due again, its attempt counted
    (again,) = await outbox.claim("other", lease_s=30)
    assert again.id == held.id and again.attempts == 2
    await outbox.sent(held, "doomed")  # the dead holder's late word changes nothing
    assert await outbox.pending() == 1
    await outbox.retry(again, "other", 5.0, "broker away")
    assert await outbox.claim("other") == []
    assert await outbox.next_due() == clock.now + 5.0
    clock.now += 5
    (third,) = await outbox.claim("other")
    await outbox.give_up(third, "other", "never")
    assert await outbox.pending() == 0 and await outbox.claim("other") == []


async def test_the_queued_jobs_of_a_model_are_counted_up_to_a_limit(db: Database) -> None:
    store = JobStore(db)
    for i in range(5):
        await store.submit(spec(f"g-{i}", model="gpt"))
    await store.submit(spec("s-1", model="smollm2"))
    assert await store.model_queued("gpt", 100) == 5
    assert await store.model_queued("gpt", 3) == 3  # a bridge asks "over its limit?" only
    assert await store.model_queued("smollm2", 100) == 1
    await store.claim("runner", lease_s=30)
    assert await store.model_queued("gpt", 100) + await store.model_queued("smollm2", 9) == 5
