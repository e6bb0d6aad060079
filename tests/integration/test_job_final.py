"""Every job the store makes final is heard of once, after its transaction (``on_final``), and
counted in ``noa_jobs_total``: settled by a runner, cancelled, and dead on a lost last lease
inside a claim (no runner's hook sees that one). A stale token's write is heard of never."""

from __future__ import annotations

from noa.jobs.job_metrics import JobMetrics
from noa.jobs.model import Job, JobSpec, JobStatus
from noa.jobs.store import JobStore
from noa.observability.metrics import Metrics, render
from noa.storage.db import Database

T0 = 1_763_856_000.0
BODY = {"model": "gpt", "input": "x"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


async def test_each_way_to_a_final_status_is_heard_once_and_counted(db: Database) -> None:
    clock, heard, metrics = Clock(), [], Metrics()
    counted = JobMetrics(metrics)

    def on_final(job: Job) -> None:
        heard.append(job)
        counted.finished(job)

    store = JobStore(db, clock, on_final=on_final)
    made = [
        (await store.submit(JobSpec(endpoint="/v1/embeddings", body=BODY, max_attempts=1)))[0]
        for _ in range(5)
    ]
    first, second, third, fourth = await store.claim("runner", lease_s=30, limit=4)
    (queued,) = [j for j in made if j.id not in {first.job.id, second.job.id, third.job.id,
                                                 fourth.job.id}]  # fmt: skip
    assert await store.complete(first.job.id, first.token, {"ok": True})
    assert await store.fail(second.job.id, second.token, "bad request")
    assert await store.bury(third.job.id, third.token, "upstream down")
    assert not await store.complete(first.job.id, first.token, {"again": True})  # stale
    await store.cancel(queued.id)
    assert await store.retry(fourth.job.id, fourth.token, "try again", run_at=T0)
    (again,) = await store.claim("runner", lease_s=30)
    clock.now += 31  # its lease lapses on its last attempt (its attempts are spent)
    assert again.job.id == fourth.job.id
    assert await store.claim("other", lease_s=30) == []  # recovered: dead, inside the claim
    assert [(j.id, j.status) for j in heard] == [
        (first.job.id, JobStatus.COMPLETED),
        (second.job.id, JobStatus.FAILED),
        (third.job.id, JobStatus.DEAD),
        (queued.id, JobStatus.CANCELLED),
        (fourth.job.id, JobStatus.DEAD),
    ]
    assert heard[-1].error is not None and heard[-1].error["code"] == "lease_expired"
    text = render(metrics.snapshot()).decode()
    for outcome, n in (("completed", 1), ("failed", 1), ("dead", 2), ("cancelled", 1)):
        assert f'noa_jobs_total{{outcome="{outcome}",queue="medium"}} {n}.0' in text, text


async def test_a_failing_hook_is_logged_and_changes_nothing(db: Database) -> None:
    def broken(job: Job) -> None:
        raise RuntimeError("hook")

    store = JobStore(db, Clock(), on_final=broken)
    job, _ = await store.submit(JobSpec(endpoint="/v1/embeddings", body=BODY))
    (claim,) = await store.claim("runner", lease_s=30)
    assert await store.complete(job.id, claim.token, {"ok": True})
    stored = await store.get(job.id)
    assert stored is not None and stored.status is JobStatus.COMPLETED
