"""The queue bridges' tables (migration 9): the reply outbox, and the model of each job.

- ``noa_bridge_replies``: one row per answer a bridge owes a broker (``noa/jobs/replies.py``),
  written in the transaction that made its job final: ``kind`` is ``reply`` (to
  ``destination``, the message's reply-to) or ``dead_letter`` (a job dead after its retries,
  to the bridge's dead-letter destination). ``version`` is the job's fencing token when it
  ended (``UNIQUE (job_id, version, kind)``: one answer per ending). A row is ``pending`` (due
  at ``next_at``; held by ``lease_owner`` until ``next_at`` while it is being published) or
  ``failed`` (never publishable); a published row is deleted (the job keeps its result).
- ``noa_jobs.model``: the model a job's request names, so a bridge's back-pressure counts the
  queued jobs of its model through an index instead of reading request bodies.
"""

from __future__ import annotations

BRIDGE_TABLES: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS noa_bridge_replies (
        id TEXT PRIMARY KEY,
        bridge TEXT NOT NULL,
        job_id TEXT NOT NULL,
        version BIGINT NOT NULL DEFAULT 0,
        kind TEXT NOT NULL,
        destination TEXT,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        next_at DOUBLE PRECISION NOT NULL,
        lease_owner TEXT,
        last_error TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        UNIQUE (job_id, version, kind)
    )""",
    "CREATE INDEX IF NOT EXISTS noa_bridge_replies_due"
    " ON noa_bridge_replies (bridge, status, next_at)",
    "ALTER TABLE noa_jobs ADD COLUMN model TEXT",
    "CREATE INDEX IF NOT EXISTS noa_jobs_model_queued ON noa_jobs (model, status)",
)
