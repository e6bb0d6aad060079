"""The durable job store: jobs, their leases and fencing tokens, and their attempts, in SQL.

A runner ``claim``\\ s due jobs: each becomes ``running`` under a lease (owner, expiry) and a new
fencing token (the job's token plus one), and an attempt row records the claim. While it runs,
the runner ``heartbeat``\\ s to keep its lease; it ends the claim with ``complete``, ``retry``,
``fail`` or ``bury``, each one ``UPDATE`` guarded by its token. When a lease expires (the
runner was killed, partitioned or too slow), the next claim puts the job back in the queue, in
its old place, or makes it ``dead`` when that was its last attempt; whoever claims it next gets
a new token, and the old runner's writes are refused: a job's result is stored once.

Several runner processes may claim from one database: on PostgreSQL the rows are taken
``FOR UPDATE SKIP LOCKED``, on SQLite the claim holds the write lock (``BEGIN IMMEDIATE``).

``on_final`` hears of every job this store makes final, once its transaction committed: settled
by a runner, cancelled, dead on a lost last lease, a batch's jobs cancelled (``announce``): the
job metrics count them there, whichever replica made them final.
"""

from __future__ import annotations

import builtins
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from noa.jobs import job_sql as sql
from noa.jobs.job_metrics import QUEUES, queue_label
from noa.jobs.model import (
    Attempt,
    Claim,
    Job,
    JobSpec,
    JobStatus,
    dumps,
    error_body,
)
from noa.jobs.replies import enqueue_reply
from noa.jobs.webhook_outbox import enqueue_job
from noa.storage.db import Database

logger = logging.getLogger("noa.jobs.store")
Clock = Callable[[], float]
FinalHook = Callable[[Job], None]
ErrorLike = Mapping[str, Any] | str
LEASE_EXPIRED = error_body("lease expired", code="lease_expired")
SUBMIT_ROWS = 400  # rows per INSERT of submit_many: 400 x 27 parameters, under every limit


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex[:24]}"


class JobStore:
    """Submit, read, list and cancel jobs; claim them, keep and end the claims (fenced by
    token); attempts, redrive and queue depth."""

    def __init__(
        self, db: Database, clock: Clock = time.time, on_final: FinalHook | None = None
    ) -> None:
        self.db = db
        self.clock = clock
        self.on_final = on_final

    def announce(self, jobs: builtins.list[Job]) -> None:
        """Tell ``on_final`` of jobs made final (committed already); its errors are logged."""
        if self.on_final is None:
            return
        for job in jobs:
            try:
                self.on_final(job)
            except Exception:
                logger.exception("job %s: the on_final hook failed", job.id)

    # -- submitting and reading --------------------------------------------------------------

    async def submit(self, spec: JobSpec) -> tuple[Job, bool]:
        """Store a new job: (the job, True). A job of the same key with the same idempotency
        key, or of the same schedule for the same due time, is returned instead: (it, False)."""
        job = _new_job(spec, self.clock())
        row = await self.db.fetchrow(sql.INSERT, *_values(job))
        if row is not None:
            return job, True
        existing = await self._existing(spec)
        if existing is None:  # the conflicting row went away meanwhile (a rolled back insert)
            raise RuntimeError(f"job {job.id} conflicts with a job that cannot be found")
        return existing, False

    async def submit_many(
        self, specs: builtins.list[JobSpec], tx: Database | None = None
    ) -> builtins.list[Job]:
        """Store many jobs in one transaction (``tx``, when the caller holds one), a few
        multi-row ``INSERT``\\ s: the jobs stored now. A spec whose idempotency key (or
        schedule due time) is taken already is skipped, as ``submit`` would return the
        existing job instead (a batch resumed after a crash submits none of its lines twice)."""
        if not specs:
            return []
        if tx is None:
            async with self.db.transaction() as held:
                return await self.submit_many(specs, held)
        now = self.clock()
        stored: builtins.list[Job] = []
        for start in range(0, len(specs), SUBMIT_ROWS):
            jobs = {j.id: j for j in (_new_job(s, now) for s in specs[start : start + SUBMIT_ROWS])}
            width = len(sql.COLUMNS)
            rows = ", ".join(
                "(" + ", ".join(f"${i * width + c + 1}" for c in range(width)) + ")"
                for i in range(len(jobs))
            )
            args = [v for j in jobs.values() for v in _values(j)]
            inserted = await tx.fetch(
                f"INSERT INTO noa_jobs ({sql.COLS}) VALUES {rows}"
                " ON CONFLICT DO NOTHING RETURNING id",
                *args,
            )
            stored.extend(jobs[r["id"]] for r in inserted)
        return stored

    async def _existing(self, spec: JobSpec) -> Job | None:
        if spec.idempotency_key is not None:
            row = await self.db.fetchrow(sql.BY_IDEMPOTENCY, spec.key_id, spec.idempotency_key)
            if row is not None:
                return sql.job(row)
        if spec.schedule_id is not None:
            row = await self.db.fetchrow(sql.BY_SCHEDULE, spec.schedule_id, spec.due_at)
            if row is not None:
                return sql.job(row)
        return None

    async def get(self, job_id: str, key_id: str | None = None) -> Job | None:
        """The job; with ``key_id``, only if that key submitted it."""
        row = await self.db.fetchrow(sql.BY_ID, job_id)
        if row is None or (key_id is not None and row["key_id"] != key_id):
            return None
        return sql.job(row)

    async def list(
        self,
        key_id: str | None = None,
        status: JobStatus | str | None = None,
        limit: int = 20,
        after: str | None = None,
    ) -> list[Job]:
        """A page of jobs, newest first (by ``created_at``, then id): ``key_id``'s own (None:
        everyone's), of one status, after the job ``after`` (the last of the previous page)."""
        query, args = sql.listing(key_id, None if status is None else JobStatus(status), after)
        return [sql.job(r) for r in await self.db.fetch(query, *args, max(0, limit))]

    async def cancel(self, job_id: str, key_id: str | None = None) -> Job | None:
        """Cancel a queued or running job (a running one's runner then holds a stale token:
        its later writes are refused); a finished job is left as it is. The job after, or None
        when there is no such job (of ``key_id``, when given)."""
        scope = "" if key_id is None else " AND key_id = $3"
        args: tuple[Any, ...] = () if key_id is None else (key_id,)
        now = self.clock()
        ended: builtins.list[Job] = []
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(sql.CANCEL.replace("{scope}", scope), now, job_id, *args)
            if row is not None:
                await tx.execute(sql.FINISH_ATTEMPT, now, "cancelled", None, job_id, row["token"])
                cancelled = await tx.fetchrow(sql.BY_ID, job_id)
                if cancelled is not None:
                    ended.append(sql.job(cancelled))
                    await _final_events(tx, ended[-1], now)
        self.announce(ended)
        return await self.get(job_id, key_id)

    # -- claiming and ending claims ----------------------------------------------------------

    async def claim(
        self, owner: str, lease_s: float, limit: int = 1, now: float | None = None
    ) -> builtins.list[Claim]:
        """Up to ``limit`` due jobs, now held by ``owner`` for ``lease_s`` seconds, in strict
        order: priority, then ``run_at``, then age. Jobs whose lease expired are claimable again
        (or dead, when that was their last attempt)."""
        now = self.clock() if now is None else now
        async with self.db.transaction() as tx:
            dead = await self._recover(tx, now)
            claims = await self._claim(tx, owner, lease_s, limit, now)
        self.announce(dead)  # committed
        return claims

    async def _claim(
        self, tx: Database, owner: str, lease_s: float, limit: int, now: float
    ) -> builtins.list[Claim]:
        if limit <= 0:
            return []
        rows = await tx.fetch(sql.locked(sql.CLAIM, tx.dialect), now, limit, owner, now + lease_s)
        jobs = sorted(
            (sql.job(r) for r in rows), key=lambda j: (j.priority, j.run_at, j.created_at, j.id)
        )
        if jobs:
            await tx.executemany(sql.ATTEMPT, [(j.id, j.token, j.token, owner, now) for j in jobs])
        return [Claim(j, j.token) for j in jobs]

    async def _recover(self, tx: Database, now: float) -> builtins.list[Job]:
        """Expired leases: the jobs back in the queue (or dead: those returned), their
        attempts ended."""
        reason = dumps(LEASE_EXPIRED)
        lost = await tx.fetch(sql.locked(sql.RECOVER, tx.dialect), now, reason)
        if lost:
            await tx.executemany(
                sql.FINISH_ATTEMPT,
                [(now, "lease_expired", reason, r["id"], r["token"]) for r in lost],
            )
        dead: builtins.list[Job] = []
        for r in lost:  # dead on its last attempt's lost lease: its webhook, as _settle's
            if r["status"] == JobStatus.DEAD.value:
                row = await tx.fetchrow(sql.BY_ID, r["id"])
                if row is not None:
                    dead.append(sql.job(row))
                    await _final_events(tx, dead[-1], now)
        return dead

    async def heartbeat(self, job_id: str, token: int, lease_s: float) -> bool:
        """Extend the lease by ``lease_s`` from now; False when ``token`` is no longer the job's
        (the lease was lost, the job cancelled): the runner should stop."""
        now = self.clock()
        row = await self.db.fetchrow(sql.HEARTBEAT, now + lease_s, now, job_id, token)
        return row is not None

    async def complete(self, job_id: str, token: int, result: Mapping[str, Any]) -> bool:
        """Store the result; False (nothing written) when ``token`` is stale."""
        return await self._settle(
            job_id, token, JobStatus.COMPLETED, "completed", result=dict(result)
        )

    async def retry(self, job_id: str, token: int, error: ErrorLike, run_at: float) -> bool:
        """Back to the queue until ``run_at`` after a retryable failure (the runner buries the
        job instead once its attempts are spent); False when ``token`` is stale."""
        return await self._settle(
            job_id, token, JobStatus.QUEUED, "retried", error=error, run_at=run_at
        )

    async def fail(self, job_id: str, token: int, error: ErrorLike) -> bool:
        """Failed for good (a client error, never retried); False when ``token`` is stale."""
        return await self._settle(job_id, token, JobStatus.FAILED, "failed", error=error)

    async def bury(self, job_id: str, token: int, error: ErrorLike) -> bool:
        """Dead (its attempts spent, or not retryable by the runner's judgement), every
        attempt kept; False when ``token`` is stale."""
        return await self._settle(job_id, token, JobStatus.DEAD, "dead", error=error)

    async def release(
        self, job_id: str, token: int, run_at: float, reason: ErrorLike | None = None
    ) -> bool:
        """Hand back a claim that never ran (its runner held it back, say behind a 429): queued
        again until ``run_at``, the attempt not counted, ``reason`` kept on its attempt row
        only; False when ``token`` is stale."""
        now = self.clock()
        reason_json = None if reason is None else dumps(error_body(reason))
        async with self.db.transaction() as tx:
            if await tx.fetchrow(sql.RELEASE, run_at, now, job_id, token) is None:
                return False
            await tx.execute(sql.FINISH_ATTEMPT, now, "released", reason_json, job_id, token)
        return True

    async def _settle(
        self,
        job_id: str,
        token: int,
        status: JobStatus,
        outcome: str,
        *,
        result: dict[str, Any] | None = None,
        error: ErrorLike | None = None,
        run_at: float | None = None,
    ) -> bool:
        now = self.clock()
        error_json = None if error is None else dumps(error_body(error))
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(
                sql.SETTLE,
                status.value,
                None if result is None else dumps(result),
                error_json,
                run_at,
                now if status.final else None,
                now,
                job_id,
                token,
            )
            if row is None:
                return False
            await tx.execute(sql.FINISH_ATTEMPT, now, outcome, error_json, job_id, token)
            final = sql.job(row) if status.final else None
            if final is not None:
                await _final_events(tx, final, now)
        if final is not None:
            self.announce([final])
        return True

    # -- history, redrive, metrics ------------------------------------------------------------

    async def attempts(self, job_id: str) -> builtins.list[Attempt]:
        """Every claim of the job, first first."""
        return [sql.attempt(r) for r in await self.db.fetch(sql.ATTEMPTS, job_id)]

    async def redrive(self, job_id: str) -> Job | None:
        """A dead or failed job queued again now, its attempts count reset (their rows kept);
        None when there is no such job or it is neither dead nor failed."""
        row = await self.db.fetchrow(sql.REDRIVE, self.clock(), job_id)
        return None if row is None else sql.job(row)

    async def depth(self) -> dict[str, int]:
        """Jobs by status (every status, zeros included): the queue depth metric."""
        counts = {s.value: 0 for s in JobStatus}
        for row in await self.db.fetch(sql.DEPTH):
            counts[row["status"]] = int(row["n"])
        return counts

    async def queue_depths(self) -> dict[str, int]:
        """Queued jobs per ``queue`` label (``job_metrics.QUEUES``, zeros included): the
        ``noa_queue_depth`` gauge (``JobMetrics.depth``)."""
        counts = dict.fromkeys(QUEUES, 0)
        for row in await self.db.fetch(sql.QUEUED):
            queue = queue_label(int(row["priority"]), bool(row["batch"]))
            counts[queue] = counts.get(queue, 0) + int(row["n"])
        return counts

    async def model_queued(self, model: str, limit: int) -> int:
        """The queued jobs of ``model``, counted up to ``limit`` (a bridge's back-pressure)."""
        row = await self.db.fetchrow(sql.MODEL_QUEUED, model, limit)
        return 0 if row is None else int(row["n"])

    async def next_due(self) -> float | None:
        """When the next claim can find work: the earliest ``run_at`` of a queued job or lease
        expiry of a running one (None: nothing waits). A runner may sleep until then."""
        row = await self.db.fetchrow(sql.NEXT_DUE)
        return None if row is None or row["t"] is None else float(row["t"])


async def _final_events(tx: Database, job: Job, now: float) -> None:
    """What a job made final owes, written in the transaction that made it so: its webhook
    and, for a queue bridge's job, its answer to the broker."""
    await enqueue_job(tx, job, now)
    await enqueue_reply(tx, job, now)


def _values(job: Job) -> tuple[Any, ...]:
    values = {
        **{c: getattr(job, c) for c in sql.COLUMNS},
        "body": dumps(job.body),
        "priority": int(job.priority),
        "status": job.status.value,
        "metadata": dumps(job.metadata),
        "result": None,
        "error": None,
    }
    return tuple(values[c] for c in sql.COLUMNS)


def _new_job(spec: JobSpec, now: float) -> Job:
    """The queued job a spec makes (``submit_many``'s)."""
    return Job(
        id=new_job_id(),
        key_id=spec.key_id,
        team=spec.team,
        endpoint=spec.endpoint,
        body=dict(spec.body),
        priority=spec.priority,
        status=JobStatus.QUEUED,
        run_at=now if spec.run_at is None else spec.run_at,
        created_at=now,
        updated_at=now,
        attempts=0,
        max_attempts=spec.max_attempts,
        token=0,
        idempotency_key=spec.idempotency_key,
        callback_url=spec.callback_url,
        metadata=dict(spec.metadata),
        parent_id=spec.parent_id,
        schedule_id=spec.schedule_id,
        due_at=spec.due_at,
        traceparent=spec.traceparent,
    )
