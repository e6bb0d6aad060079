"""The durable webhook outbox: a delivery is written in the transaction that makes its subject
final (a job completed, failed, dead or cancelled; a batch ended), and sent later by a sweep,
so no event is lost to a crash between the two.

``enqueue`` inserts one row of ``noa_webhook_deliveries``, its payload (the JSON body sent)
built then; ``(kind, subject_id, version, event_type)`` is unique, so settling the same claim
twice makes one event, and a redriven job that finishes again (a new fencing token: a new
``version``) makes a new one.

``WebhookOutbox.sweep`` claims due pending rows under a lease (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, the write lock on SQLite, as ``JobStore.claim``), counts and records an attempt for
each, makes that one attempt (``WebhookSender.attempt``: signed with every configured secret,
the stored bytes, the event id as ``webhook-id``) and then, guarded by its lease, marks the row
delivered (a 2xx), failed (any other 4xx, a refused target, or its attempts spent) or due again
after a capped, jittered backoff (408, 429, 5xx, connection errors and timeouts; a 429's or
503's ``Retry-After`` lengthens the wait up to the cap). A claimed row's ``next_at`` is its
lease expiry: when a sweeper dies mid-delivery the row is due again once the lease runs out,
its unfinished attempt marked so (delivery is at least once; receivers dedupe on
``webhook-id``).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from noa.jobs.backoff import backoff_s
from noa.jobs.job_metrics import JobMetrics
from noa.jobs.job_sql import locked
from noa.jobs.model import Job, dumps
from noa.jobs.webhook_signing import WebhookSecret
from noa.jobs.webhooks import WebhookSender, WebhookTry
from noa.storage.db import Database, Row

Clock = Callable[[], float]
LEASE_LOST = "lease expired: the sender stopped before the attempt ended"

INSERT = """
INSERT INTO noa_webhook_deliveries (
    id, kind, subject_id, version, url, event_type, payload, status, attempts, next_at,
    created_at, updated_at
) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8, $8)
ON CONFLICT DO NOTHING
"""
# Rows whose lease expired on their last attempt ($1 now, $2 max attempts, $3 reason): failed.
EXPIRE = """
WITH lost AS (
    SELECT id AS lost_id FROM noa_webhook_deliveries
    WHERE status = 'pending' AND lease_owner IS NOT NULL AND next_at <= $1
      AND attempts >= $2{lock}
)
UPDATE noa_webhook_deliveries SET
    status = 'failed', last_error = $3, lease_owner = NULL, lease_expires_at = NULL,
    updated_at = $1
FROM lost WHERE id = lost.lost_id
RETURNING id, kind, attempts
"""
# Due rows ($1 now, $2 how many): held by $3 until $4, their attempt counted.
CLAIM = """
WITH due AS (
    SELECT id AS due_id FROM noa_webhook_deliveries
    WHERE status = 'pending' AND next_at <= $1
    ORDER BY next_at, id
    LIMIT $2{lock}
)
UPDATE noa_webhook_deliveries SET
    attempts = attempts + 1, lease_owner = $3, lease_expires_at = $4, next_at = $4,
    updated_at = $1
FROM due WHERE id = due.due_id
RETURNING id, kind, url, payload, attempts
"""
ABANDON = (
    "UPDATE noa_webhook_attempts SET error = $1"
    " WHERE delivery_id = $2 AND duration_ms IS NULL AND error IS NULL"
)
ATTEMPT = "INSERT INTO noa_webhook_attempts (delivery_id, number, at) VALUES ($1, $2, $3)"
FINISH_ATTEMPT = (
    "UPDATE noa_webhook_attempts SET status_code = $1, error = $2, duration_ms = $3"
    " WHERE delivery_id = $4 AND number = $5"
)
# The end of one attempt, guarded by the lease ($7 owner, $8 the attempt's number): $1 status,
# $2 next_at, $3 last_status, $4 last_error, $5 delivered_at, $6 now, $9 id.
SETTLE = """
UPDATE noa_webhook_deliveries SET
    status = $1, next_at = $2, last_status = $3, last_error = $4, delivered_at = $5,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = $6
WHERE id = $9 AND lease_owner = $7 AND attempts = $8 AND status = 'pending'
RETURNING id
"""
BY_SUBJECT = (
    "SELECT id, event_type, status, attempts, next_at, created_at, delivered_at, last_error"
    " FROM noa_webhook_deliveries WHERE kind = $1 AND subject_id = $2"
    " ORDER BY created_at, version, id"
)
ATTEMPTS = (
    "SELECT a.delivery_id, a.number, a.at, a.status_code, a.error"
    " FROM noa_webhook_attempts a JOIN noa_webhook_deliveries d ON d.id = a.delivery_id"
    " WHERE d.kind = $1 AND d.subject_id = $2 ORDER BY a.delivery_id, a.number"
)
NEXT_DUE = "SELECT min(next_at) AS t FROM noa_webhook_deliveries WHERE status = 'pending'"


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex[:24]}"


def event_payload(
    event_id: str, event_type: str, data: Mapping[str, Any], now: float
) -> dict[str, Any]:
    """The body a receiver gets: an OpenAI-style event object."""
    return {
        "id": event_id,
        "object": "event",
        "created_at": int(now),
        "type": event_type,
        "data": dict(data),
    }


async def enqueue(
    tx: Database,
    *,
    kind: str,
    subject_id: str,
    url: str,
    event_type: str,
    data: Mapping[str, Any],
    now: float,
    version: int = 0,
) -> None:
    """Add a pending delivery (due now) in ``tx``, the transaction that makes the subject
    final; nothing when that event of that version of the subject is there already."""
    event_id = new_event_id()
    payload = dumps(event_payload(event_id, event_type, data, now))
    await tx.execute(INSERT, event_id, kind, subject_id, version, url, event_type, payload, now)


async def enqueue_job(tx: Database, job: Job, now: float) -> None:
    """``job.<status>`` for a job that just became final and has a ``callback_url`` (its
    fencing token is the version); nothing otherwise."""
    if job.callback_url and job.status.final:
        await enqueue(
            tx,
            kind="job",
            subject_id=job.id,
            url=job.callback_url,
            event_type=f"job.{job.status.value}",
            data=job.public(),
            now=now,
            version=job.token,
        )


class WebhookOutbox:
    """Sweeps the outbox (see the module docstring). ``sender`` makes the attempts (its own
    ``max_attempts`` and backoff are not used here: one attempt per claim); ``secrets``, when
    given, sign instead of the sender's own. ``clock`` dates leases, due times and attempt rows;
    ``rng`` draws the jitter."""

    def __init__(
        self,
        db: Database,
        sender: WebhookSender,
        *,
        secrets: Sequence[WebhookSecret] | None = None,
        clock: Clock = time.time,
        rng: random.Random | None = None,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 300.0,
        max_attempts: int = 8,
        lease_s: float = 60.0,
        metrics: JobMetrics | None = None,
    ) -> None:
        if not 1 <= max_attempts <= 100:
            raise ValueError("max_attempts is 1 to 100")
        if not lease_s > sender.timeout_s:
            raise ValueError("lease_s must be longer than the sender's timeout_s")
        self.db = db
        self.sender = sender
        self.secrets = tuple(secrets) if secrets else None
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.max_attempts = max_attempts
        self.lease_s = lease_s
        self.metrics = metrics

    async def sweep(self, owner: str, limit: int = 16) -> int:
        """One attempt at each of up to ``limit`` due deliveries, concurrently; how many."""
        now = self.clock()
        rows: list[Row] = []
        async with self.db.transaction() as tx:
            lost = await tx.fetch(locked(EXPIRE, tx.dialect), now, self.max_attempts, LEASE_LOST)
            if limit > 0:
                rows = await tx.fetch(
                    locked(CLAIM, tx.dialect), now, limit, owner, now + self.lease_s
                )
            if lost or rows:  # their attempts cut short by a lost lease, if any
                await tx.executemany(ABANDON, [(LEASE_LOST, r["id"]) for r in (*lost, *rows)])
            if rows:
                await tx.executemany(ATTEMPT, [(r["id"], r["attempts"], now) for r in rows])
        for row in lost:
            self._count(row["kind"], "failed")
        done = await asyncio.gather(
            *(self._deliver(owner, row) for row in rows), return_exceptions=True
        )
        for outcome in done:  # every attempt ended first; a row left leased is retried later
            if isinstance(outcome, BaseException):
                raise outcome
        return len(rows)

    async def _deliver(self, owner: str, row: Row) -> None:
        number = int(row["attempts"])
        result: WebhookTry | None = None
        status_code: int | None = None
        duration_ms = 0.0
        try:
            result = await self.sender.attempt(
                row["url"],
                str(row["payload"]).encode("utf-8"),
                msg_id=row["id"],
                secrets=self.secrets,
                number=number,
            )
        except ValueError as e:  # an id or body that cannot be signed: never deliverable
            error: str | None = f"cannot be signed: {e}"
        else:
            error, status_code = result.attempt.error, result.attempt.status_code
            duration_ms = result.attempt.duration_ms
        now = self.clock()
        status, next_at, outcome = self._next(result, number, now)
        async with self.db.transaction() as tx:
            await tx.execute(FINISH_ATTEMPT, status_code, error, duration_ms, row["id"], number)
            settled = await tx.fetchrow(
                SETTLE,
                status,
                next_at,
                status_code,
                error,
                now if status == "delivered" else None,
                now,
                owner,
                number,
                row["id"],
            )
        if settled is not None:  # else our lease ran out and another sweep has the row
            self._count(row["kind"], outcome)

    def _next(self, result: WebhookTry | None, number: int, now: float) -> tuple[str, float, str]:
        """(status, next_at, metric outcome) after attempt ``number``."""
        if result is not None and result.outcome == "delivered":
            return "delivered", now, "delivered"
        if result is None or result.outcome == "failed" or number >= self.max_attempts:
            return "failed", now, "failed"
        delay = backoff_s(number - 1, self.backoff_base_s, self.backoff_cap_s, rng=self.rng)
        if result.retry_after is not None:
            delay = max(delay, min(result.retry_after, self.backoff_cap_s))
        return "pending", now + delay, "retried"

    def _count(self, kind: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.webhook(kind, outcome)

    async def deliveries(self, kind: str, subject_id: str) -> list[dict[str, Any]]:
        """The subject's deliveries, oldest first, each with its attempts (for the job API)."""
        attempts: dict[str, list[dict[str, Any]]] = {}
        for a in await self.db.fetch(ATTEMPTS, kind, subject_id):
            attempts.setdefault(a["delivery_id"], []).append(
                {
                    "number": int(a["number"]),
                    "at": a["at"],
                    "status_code": None if a["status_code"] is None else int(a["status_code"]),
                    "error": a["error"],
                }
            )
        return [
            {
                "id": d["id"],
                "event_type": d["event_type"],
                "status": d["status"],
                "attempts": attempts.get(d["id"], []),
                "next_at": d["next_at"] if d["status"] == "pending" else None,
                "created_at": d["created_at"],
                "delivered_at": d["delivered_at"],
                "last_error": d["last_error"],
            }
            for d in await self.db.fetch(BY_SUBJECT, kind, subject_id)
        ]

    async def next_due(self) -> float | None:
        """When the next sweep can find work (a pending row's due time or lease expiry); None:
        nothing pending. A loop may sleep until then (or until notified of a new row)."""
        row = await self.db.fetchrow(NEXT_DUE)
        return None if row is None or row["t"] is None else float(row["t"])
