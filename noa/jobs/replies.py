"""The reply outbox of jobs a queue bridge made: the answer to a broker message is written in
the transaction that makes its job final, and published later by the bridge, so no answer is
lost to a crash between the two (as ``webhook_outbox.py`` does for webhooks).

``enqueue_reply`` adds, for a job whose metadata names its bridge (``noa_bridge``), a ``reply``
row when the job has somewhere to answer (``noa_reply_to``) and, when the job is dead (its
retries spent), a ``dead_letter`` row as well. ``(job_id, version, kind)`` is unique: settling
the same claim twice makes one answer, a redriven job that ends again (a new fencing token)
makes a new one, and a redelivered message finds its job, not a second answer.

``ReplyOutbox`` is one bridge's view: ``claim`` holds due rows under a lease (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL, the write lock on SQLite) with their jobs; ``sent`` deletes a row
once the broker has its message (the job keeps the result); ``retry`` makes it due again after
a backoff. A row whose holder died is due again when its lease runs out: a result is published
at least once, and at most twice only when a bridge dies between the broker's confirm and
``sent`` (receivers dedupe on the message id).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from noa.jobs import job_sql as sql
from noa.jobs.job_sql import locked
from noa.jobs.model import Job, JobStatus
from noa.storage.db import Database

Clock = Callable[[], float]
REPLY = "reply"
DEAD_LETTER = "dead_letter"

INSERT = """
INSERT INTO noa_bridge_replies (
    id, bridge, job_id, version, kind, destination, status, attempts, next_at, created_at
) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7)
ON CONFLICT DO NOTHING
"""
# Due rows of bridge $1 ($2 now, $3 how many): held by $4 until $5, their attempt counted.
CLAIM = """
WITH due AS (
    SELECT id AS due_id FROM noa_bridge_replies
    WHERE bridge = $1 AND status = 'pending' AND next_at <= $2
    ORDER BY next_at, id
    LIMIT $3{lock}
)
UPDATE noa_bridge_replies SET
    attempts = attempts + 1, lease_owner = $4, next_at = $5
FROM due WHERE id = due.due_id
RETURNING id, job_id, kind, destination, attempts
"""
SENT = "DELETE FROM noa_bridge_replies WHERE id = $1 AND lease_owner = $2"
RETRY = (
    "UPDATE noa_bridge_replies SET status = $1, next_at = $2, last_error = $3,"
    " lease_owner = NULL WHERE id = $4 AND lease_owner = $5"
)
NEXT_DUE = (
    "SELECT min(next_at) AS t FROM noa_bridge_replies WHERE bridge = $1 AND status = 'pending'"
)
PENDING = "SELECT count(*) AS n FROM noa_bridge_replies WHERE bridge = $1 AND status = 'pending'"


@dataclass(frozen=True)
class Reply:
    """A claimed row: the job to answer for, what to publish (``kind``) and where
    (``destination``; None: the bridge's own reply or dead-letter destination)."""

    id: str
    job: Job
    kind: str
    destination: str | None
    attempts: int


async def enqueue_reply(tx: Database, job: Job, now: float) -> None:
    """The rows a final bridge job makes, in ``tx`` (see the module docstring)."""
    bridge = job.metadata.get("noa_bridge")
    if not isinstance(bridge, str) or not job.status.final:
        return
    reply_to = job.metadata.get("noa_reply_to")
    rows: list[tuple[str, str | None]] = []
    if isinstance(reply_to, str) and reply_to:
        rows.append((REPLY, reply_to))
    if job.status is JobStatus.DEAD:
        rows.append((DEAD_LETTER, None))
    for kind, destination in rows:
        row_id = f"rpl_{uuid.uuid4().hex[:24]}"
        await tx.execute(INSERT, row_id, bridge, job.id, job.token, kind, destination, now)


class ReplyOutbox:
    """One bridge's rows (see the module docstring)."""

    def __init__(self, db: Database, bridge: str, clock: Clock = time.time) -> None:
        self.db = db
        self.bridge = bridge
        self.clock = clock

    async def claim(self, owner: str, limit: int = 32, lease_s: float = 30.0) -> list[Reply]:
        """Up to ``limit`` due rows, held by ``owner`` for ``lease_s``, with their jobs (a
        row whose job is gone is dropped)."""
        now = self.clock()
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                locked(CLAIM, tx.dialect), self.bridge, now, limit, owner, now + lease_s
            )
            if not rows:
                return []
            ids = sorted({r["job_id"] for r in rows})
            marks = ", ".join(f"${i}" for i in range(1, len(ids) + 1))
            found = await tx.fetch(f"SELECT {sql.COLS} FROM noa_jobs WHERE id IN ({marks})", *ids)
            jobs = {j.id: j for j in map(sql.job, found)}
            gone = [(r["id"], owner) for r in rows if r["job_id"] not in jobs]
            if gone:
                await tx.executemany(SENT, gone)
        return [
            Reply(r["id"], jobs[r["job_id"]], r["kind"], r["destination"], int(r["attempts"]))
            for r in sorted(rows, key=lambda r: r["id"])
            if r["job_id"] in jobs
        ]

    async def sent(self, reply: Reply, owner: str) -> None:
        """The broker has ``reply``'s message: the row goes."""
        await self.db.execute(SENT, reply.id, owner)

    async def sent_many(self, replies: list[Reply], owner: str) -> None:
        """The broker has these replies' messages: their rows go, in one transaction."""
        if replies:
            async with self.db.transaction() as tx:
                await tx.executemany(SENT, [(r.id, owner) for r in replies])

    async def retry(self, reply: Reply, owner: str, delay_s: float, error: str) -> None:
        """Publishing ``reply`` failed: due again in ``delay_s``."""
        await self.db.execute(
            RETRY, "pending", self.clock() + delay_s, error[:2000], reply.id, owner
        )

    async def give_up(self, reply: Reply, owner: str, error: str) -> None:
        """``reply`` can never be published (kept, ``failed``, for an operator to see)."""
        await self.db.execute(RETRY, "failed", self.clock(), error[:2000], reply.id, owner)

    async def next_due(self) -> float | None:
        """When the next ``claim`` can find a row (a due time or a lease expiry); None: none."""
        row = await self.db.fetchrow(NEXT_DUE, self.bridge)
        return None if row is None or row["t"] is None else float(row["t"])

    async def pending(self) -> int:
        row = await self.db.fetchrow(PENDING, self.bridge)
        return 0 if row is None else int(row["n"])
