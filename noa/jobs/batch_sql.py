"""What a batch is (its states, its stored row, OpenAI's view of it) and the batch store's SQL,
the same on SQLite and PostgreSQL but for the row locks (``{lock}``, as in ``job_sql``).

A batch is ``validating`` while its input file is read into jobs, ``in_progress`` while they
run, ``finalizing`` while the output files are written, then ``completed``; or ``failed`` (no
valid line), ``expired`` (past its completion window: what finished is kept) or, through
``cancelling``, ``cancelled``. An advance holds a batch under a lease and a token (every claim
increments it), and every write of its advance is guarded by that token and the status it
read: a replica that lost the lease, or a batch cancelled meanwhile, writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from noa.jobs.model import dumps, loads
from noa.storage.db import Row


class LeaseLost(Exception):
    """The batch's lease (its token) or status moved on: this advance writes no more."""


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL


FINAL = frozenset(
    {BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)
TIMES = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)
COLUMNS = (
    "id",
    "key_id",
    "team",
    "endpoint",
    "input_file_id",
    "completion_window",
    "status",
    "metadata",
    "callback_url",
    "output_file_id",
    "error_file_id",
    "errors",
    "total_count",
    "completed_count",
    "failed_count",
    "lines_read",
    "lease_owner",
    "lease_expires_at",
    "token",
    "traceparent",
    *TIMES,
    "updated_at",
)
COLS = ", ".join(COLUMNS)


@dataclass(frozen=True)
class Batch:
    """A stored batch, as its row reads (the counts: as it ended, or as counted live)."""

    id: str
    key_id: str
    team: str | None
    endpoint: str
    input_file_id: str
    completion_window: str
    status: BatchStatus
    created_at: float
    expires_at: float
    updated_at: float
    metadata: dict[str, Any] | None = None
    callback_url: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: dict[str, Any] | None = None
    total_count: int = 0
    completed_count: int = 0
    failed_count: int = 0
    lines_read: int = 0
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    token: int = 0
    traceparent: str | None = None  # the creating request's span (W3C), when traced
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    expired_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None

    def public(self) -> dict[str, Any]:
        """OpenAI's batch object, its times in whole Unix seconds."""
        times = {name: _seconds(getattr(self, name)) for name in TIMES}
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": self.errors,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status.value,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            **times,
            "request_counts": {
                "total": self.total_count,
                "completed": self.completed_count,
                "failed": self.failed_count,
            },
            "metadata": self.metadata,
        }


def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)


def batch(row: Row) -> Batch:
    fields = {c: row[c] for c in COLUMNS}
    fields["status"] = BatchStatus(row["status"])
    fields["metadata"] = loads(row["metadata"])
    fields["errors"] = loads(row["errors"])
    for name in ("total_count", "completed_count", "failed_count", "lines_read", "token"):
        fields[name] = int(row[name])
    return Batch(**fields)


def values(b: Batch) -> tuple[Any, ...]:
    row = {c: getattr(b, c) for c in COLUMNS}
    row["status"] = b.status.value
    row["metadata"] = None if b.metadata is None else dumps(b.metadata)
    row["errors"] = None if b.errors is None else dumps(b.errors)
    return tuple(row[c] for c in COLUMNS)


INSERT = (
    f"INSERT INTO noa_batches ({COLS})"
    f" VALUES ({', '.join(f'${i + 1}' for i in range(len(COLUMNS)))})"
)
BY_ID = f"SELECT {COLS} FROM noa_batches WHERE id = $1"
ACTIVE = "('validating', 'in_progress', 'finalizing', 'cancelling')"

# The batches to advance ($1 now, $2 how many, $3 owner, $4 lease expiry), least recently
# visited first: active ones whose lease is free or spent, each claimed with a new token.
CLAIM = f"""
WITH due AS (
    SELECT id AS due_id FROM noa_batches
    WHERE status IN {ACTIVE} AND (lease_expires_at IS NULL OR lease_expires_at <= $1)
    ORDER BY updated_at, id
    LIMIT $2{{lock}}
)
UPDATE noa_batches SET lease_owner = $3, lease_expires_at = $4, token = token + 1, updated_at = $1
FROM due WHERE id = due.due_id
RETURNING {COLS}
"""
RELEASE = (
    "UPDATE noa_batches SET lease_owner = NULL, lease_expires_at = NULL"
    " WHERE id = $1 AND token = $2"
)
EXTEND = (
    "UPDATE noa_batches SET lease_expires_at = $1 WHERE id = $2 AND token = $3 AND status = $4"
    " RETURNING id"
)
# validation's checkpoint: $1 lines read, $2 lease expiry, $3 now, $4 id, $5 token
CHECKPOINT = """
UPDATE noa_batches SET lines_read = $1, lease_expires_at = $2, updated_at = $3
WHERE id = $4 AND token = $5 AND status = 'validating'
RETURNING id
"""
INSERT_REQUEST = "INSERT INTO noa_batch_requests (batch_id, custom_id, line) VALUES ($1, $2, $3)"
INSERT_LINE_ERROR = (
    "INSERT INTO noa_batch_line_errors (batch_id, line, custom_id, code, message, param)"
    " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING"
)
REQUESTS = "SELECT count(*) AS n FROM noa_batch_requests WHERE batch_id = $1"
LINE_ERRORS = (
    "SELECT line, custom_id, code, message, param FROM noa_batch_line_errors"
    " WHERE batch_id = $1 ORDER BY line LIMIT $2"
)
INVALID = "SELECT count(*) AS n FROM noa_batch_line_errors WHERE batch_id = $1"
CHILDREN = "SELECT status, count(*) AS n FROM noa_jobs WHERE parent_id = $1 GROUP BY status"
# a batch's jobs cancelled ($1 now, $2 batch id), their running attempts ended first
END_ATTEMPTS = """
UPDATE noa_job_attempts SET finished_at = $1, outcome = 'cancelled'
WHERE finished_at IS NULL AND job_id IN (
    SELECT id FROM noa_jobs WHERE parent_id = $2 AND status = 'running'
)
"""
CANCEL_CHILDREN = """
UPDATE noa_jobs SET
    status = 'cancelled', finished_at = $1, lease_owner = NULL, lease_expires_at = NULL,
    updated_at = $1
WHERE parent_id = $2 AND status IN {statuses}
RETURNING {cols}
"""
CANCEL = """
UPDATE noa_batches SET status = 'cancelling', cancelling_at = $1, updated_at = $1
WHERE id = $2 AND status IN ('validating', 'in_progress')
RETURNING id
"""
# a batch's requests with their jobs in line order, after line $3 ($1 batch id, $2 its key)
_JOINED = """
FROM noa_batch_requests r
JOIN noa_jobs j ON j.key_id = $2 AND j.idempotency_key = r.batch_id || ':' || CAST(r.line AS TEXT)
WHERE r.batch_id = $1 AND r.line > $3
"""
OUTPUT_PAGE = f"""
SELECT r.line AS line, r.custom_id AS custom_id, j.id AS job_id, j.result AS result
{_JOINED} AND j.status = 'completed'
ORDER BY r.line LIMIT $4
"""
ERROR_PAGE = f"""
SELECT line, custom_id, job_id, status, error, code, message FROM (
    SELECT r.line AS line, r.custom_id AS custom_id, j.id AS job_id, j.status AS status,
        j.error AS error, CAST(NULL AS TEXT) AS code, CAST(NULL AS TEXT) AS message
    {_JOINED} AND j.status <> 'completed'
    UNION ALL
    SELECT e.line, e.custom_id, NULL, NULL, NULL, e.code, e.message
    FROM noa_batch_line_errors e WHERE e.batch_id = $1 AND e.line > $3
) AS x
ORDER BY line LIMIT $4
"""


def transition(changes: dict[str, Any]) -> str:
    """The guarded ``UPDATE`` that sets ``changes`` (columns: ``$1``...) on the batch whose
    id, token and status follow them."""
    names = list(changes)
    sets = ", ".join(f"{name} = ${i + 1}" for i, name in enumerate(names))
    n = len(names)
    return (
        f"UPDATE noa_batches SET {sets} WHERE id = ${n + 1} AND token = ${n + 2}"
        f" AND status = ${n + 3} RETURNING {COLS}"
    )


def listing(key_id: str | None, after: str | None) -> tuple[str, list[Any]]:
    """The page query, newest first: (SQL, its arguments but the limit, which comes last)."""
    where: list[str] = []
    args: list[Any] = []
    if key_id is not None:
        args.append(key_id)
        where.append(f"key_id = ${len(args)}")
    if after is not None:
        args.append(after)
        where.append(
            f"(created_at, id) < (SELECT created_at, id FROM noa_batches WHERE id = ${len(args)})"
        )
    sql = f"SELECT {COLS} FROM noa_batches"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return f"{sql} ORDER BY created_at DESC, id DESC LIMIT ${len(args) + 1}", args
