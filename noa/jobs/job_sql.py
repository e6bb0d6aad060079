"""The job store's SQL, the same on SQLite and PostgreSQL but for the row locks: PostgreSQL
selects the rows to claim or recover ``FOR UPDATE SKIP LOCKED`` (runners skip each other's rows
instead of waiting), SQLite runs the same statements under ``BEGIN IMMEDIATE`` (one writer at a
time), where the lock clause is left out. ``{lock}`` marks its place.

Every write of a runner (heartbeat, complete, retry, fail, bury) is one ``UPDATE ... WHERE id
AND token AND status = 'running'``: a runner whose lease expired (and whose job went back to
the queue, was claimed again or cancelled) holds a stale token, and its writes match nothing.
"""

from __future__ import annotations

from typing import Any

from noa.jobs.model import Attempt, Job, JobStatus, Priority, loads
from noa.storage.db import Row

COLUMNS = (
    "id",
    "key_id",
    "team",
    "endpoint",
    "body",
    "priority",
    "status",
    "run_at",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
    "attempts",
    "max_attempts",
    "lease_owner",
    "lease_expires_at",
    "token",
    "idempotency_key",
    "callback_url",
    "metadata",
    "result",
    "error",
    "parent_id",
    "schedule_id",
    "due_at",
    "traceparent",
    "model",
)
COLS = ", ".join(COLUMNS)
PG_LOCK = " FOR UPDATE SKIP LOCKED"

INSERT = (
    f"INSERT INTO noa_jobs ({COLS}) VALUES"
    f" ({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))})"
    " ON CONFLICT DO NOTHING RETURNING id"
)
BY_ID = f"SELECT {COLS} FROM noa_jobs WHERE id = $1"
BY_IDEMPOTENCY = f"SELECT {COLS} FROM noa_jobs WHERE key_id = $1 AND idempotency_key = $2"
BY_SCHEDULE = f"SELECT {COLS} FROM noa_jobs WHERE schedule_id = $1 AND due_at = $2"

# Expired leases ($1: now): back to the queue, where they keep their place (priority, run_at,
# age), or dead when that was the last attempt. $2: the reason (an error object, JSON).
RECOVER = """
WITH lost AS (
    SELECT id AS lost_id FROM noa_jobs
    WHERE status = 'running' AND lease_expires_at <= $1{lock}
)
UPDATE noa_jobs SET
    status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
    finished_at = CASE WHEN attempts >= max_attempts THEN $1 ELSE finished_at END,
    error = $2, lease_owner = NULL, lease_expires_at = NULL, updated_at = $1
FROM lost WHERE id = lost.lost_id
RETURNING id, token, status
"""

# The due queued jobs ($1: now; $2: how many), in strict order: priority, run_at, age.
CLAIM = f"""
WITH due AS (
    SELECT id AS due_id FROM noa_jobs
    WHERE status = 'queued' AND run_at <= $1
    ORDER BY priority, run_at, created_at, id
    LIMIT $2{{lock}}
)
UPDATE noa_jobs SET
    status = 'running', lease_owner = $3, lease_expires_at = $4,
    token = token + 1, attempts = attempts + 1,
    started_at = COALESCE(started_at, $1), updated_at = $1
FROM due WHERE id = due.due_id
RETURNING {COLS}
"""
ATTEMPT = (
    "INSERT INTO noa_job_attempts (job_id, attempt, token, owner, started_at)"
    " VALUES ($1, $2, $3, $4, $5)"
)
FINISH_ATTEMPT = (
    "UPDATE noa_job_attempts SET finished_at = $1, outcome = $2, error = $3"
    " WHERE job_id = $4 AND token = $5 AND finished_at IS NULL"
)
ATTEMPTS = (
    "SELECT job_id, attempt, token, owner, started_at, finished_at, outcome, error"
    " FROM noa_job_attempts WHERE job_id = $1 ORDER BY attempt"
)

HEARTBEAT = (
    "UPDATE noa_jobs SET lease_expires_at = $1, updated_at = $2"
    " WHERE id = $3 AND token = $4 AND status = 'running' RETURNING id"
)
# A runner's last word on its claim: $1 status, $2 result, $3 error, $4 run_at (None: kept),
# $5 finished_at, $6 now, $7 id, $8 token. The job as it is now: a final one's webhook is
# enqueued in the same transaction.
SETTLE = f"""
UPDATE noa_jobs SET
    status = $1, result = $2, error = $3, run_at = COALESCE($4, run_at), finished_at = $5,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = $6
WHERE id = $7 AND token = $8 AND status = 'running'
RETURNING {COLS}
"""
# A claim handed back unrun ($1 run_at, $2 now, $3 id, $4 token): queued again, its attempt not
# counted (and not started, if it was the first); the token moves on with the next claim as ever.
RELEASE = """
UPDATE noa_jobs SET
    status = 'queued', attempts = attempts - 1, run_at = $1,
    started_at = CASE WHEN attempts <= 1 THEN NULL ELSE started_at END,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = $2
WHERE id = $3 AND token = $4 AND status = 'running'
RETURNING id
"""
CANCEL = """
UPDATE noa_jobs SET
    status = 'cancelled', finished_at = $1, lease_owner = NULL, lease_expires_at = NULL,
    updated_at = $1
WHERE id = $2 AND status IN ('queued', 'running'){scope}
RETURNING token
"""
REDRIVE = f"""
UPDATE noa_jobs SET
    status = 'queued', attempts = 0, run_at = $1, started_at = NULL, finished_at = NULL,
    result = NULL, error = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = $1
WHERE id = $2 AND status IN ('dead', 'failed')
RETURNING {COLS}
"""
DEPTH = "SELECT status, count(*) AS n FROM noa_jobs GROUP BY status"
# the queued jobs of one model ($1), counted up to $2 (a bridge only asks "over its limit?")
MODEL_QUEUED = (
    "SELECT count(*) AS n FROM (SELECT 1 FROM noa_jobs WHERE model = $1 AND status = 'queued'"
    " LIMIT $2) AS q"
)
# queued jobs by priority, a batch's (parent_id set) apart: the noa_queue_depth gauge
QUEUED = (
    "SELECT priority, parent_id IS NOT NULL AS batch, count(*) AS n FROM noa_jobs"
    " WHERE status = 'queued' GROUP BY priority, parent_id IS NOT NULL"
)
NEXT_DUE = """
SELECT min(t) AS t FROM (
    SELECT min(run_at) AS t FROM noa_jobs WHERE status = 'queued'
    UNION ALL
    SELECT min(lease_expires_at) AS t FROM noa_jobs WHERE status = 'running'
) AS due
"""


def locked(sql: str, dialect: str) -> str:
    """``sql`` with PostgreSQL's row locks in place of ``{lock}`` (none on SQLite)."""
    return sql.replace("{lock}", PG_LOCK if dialect == "postgres" else "")


def listing(key_id: str | None, status: JobStatus | None, after: str | None) -> tuple[str, list]:
    """The page query, newest first: (SQL, its arguments but the limit, which comes last)."""
    where: list[str] = []
    args: list[Any] = []
    if key_id is not None:
        args.append(key_id)
        where.append(f"key_id = ${len(args)}")
    if status is not None:
        args.append(status.value)
        where.append(f"status = ${len(args)}")
    if after is not None:
        args.append(after)
        where.append(
            f"(created_at, id) < (SELECT created_at, id FROM noa_jobs WHERE id = ${len(args)})"
        )
    sql = f"SELECT {COLS} FROM noa_jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return f"{sql} ORDER BY created_at DESC, id DESC LIMIT ${len(args) + 1}", args


def job(row: Row) -> Job:
    return Job(
        id=row["id"],
        key_id=row["key_id"],
        team=row["team"],
        endpoint=row["endpoint"],
        body=loads(row["body"]),
        priority=Priority(row["priority"]),
        status=JobStatus(row["status"]),
        run_at=row["run_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        token=row["token"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        idempotency_key=row["idempotency_key"],
        callback_url=row["callback_url"],
        metadata=loads(row["metadata"]) or {},
        result=loads(row["result"]),
        error=loads(row["error"]),
        parent_id=row["parent_id"],
        schedule_id=row["schedule_id"],
        due_at=row["due_at"],
        traceparent=row["traceparent"],
    )


def attempt(row: Row) -> Attempt:
    return Attempt(
        job_id=row["job_id"],
        attempt=row["attempt"],
        token=row["token"],
        owner=row["owner"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        outcome=row["outcome"],
        error=loads(row["error"]),
    )
