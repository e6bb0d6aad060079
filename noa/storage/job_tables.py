"""The job tables (migration 4): jobs with their lease and fencing token, and their attempts.

Kept beside ``migrations.py``, which lists them as migration 4 (the statements live here so
that ``migrations.py`` imports this module, not the reverse: no import cycle).

- ``noa_jobs``: one row per job. ``key_id`` is ``''`` for the master key, so that the unique
  index on ``(key_id, idempotency_key)`` holds for it too (NULL idempotency keys are distinct,
  in SQLite and PostgreSQL alike: jobs without one never collide). ``(schedule_id, due_at)`` is
  unique: each due time of a schedule makes one job however many replicas race to make it.
  ``token`` is the fencing token, incremented by every claim; ``attempts`` counts claims
  against ``max_attempts`` (a redrive resets it, the token never goes back).
- ``noa_job_attempts``: one row per claim, keyed by ``(job_id, attempt)`` where ``attempt`` is
  the claim's token (each claim increments it once), with its owner, outcome and error.

``IF NOT EXISTS`` throughout: applying it to a database that holds the tables already (one
rolled back to an older schema version by hand, as a test does) changes nothing.
"""

from __future__ import annotations

JOB_TABLES: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS noa_jobs (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL DEFAULT '',
        team TEXT,
        endpoint TEXT NOT NULL,
        body TEXT NOT NULL,
        priority BIGINT NOT NULL DEFAULT 1,
        status TEXT NOT NULL,
        run_at DOUBLE PRECISION NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        updated_at DOUBLE PRECISION NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        max_attempts BIGINT NOT NULL DEFAULT 3,
        lease_owner TEXT,
        lease_expires_at DOUBLE PRECISION,
        token BIGINT NOT NULL DEFAULT 0,
        idempotency_key TEXT,
        callback_url TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        result TEXT,
        error TEXT,
        parent_id TEXT,
        schedule_id TEXT,
        due_at DOUBLE PRECISION
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS noa_jobs_idempotency ON noa_jobs (key_id, idempotency_key)",
    "CREATE UNIQUE INDEX IF NOT EXISTS noa_jobs_schedule_due ON noa_jobs (schedule_id, due_at)",
    # claiming: the due queued jobs in claim order (id last: the index is the order, no sort);
    # recovering: the running ones by lease expiry
    "CREATE INDEX IF NOT EXISTS noa_jobs_claim"
    " ON noa_jobs (status, priority, run_at, created_at, id)",
    "CREATE INDEX IF NOT EXISTS noa_jobs_lease ON noa_jobs (status, lease_expires_at)",
    # listing a key's jobs newest first; a batch's jobs
    "CREATE INDEX IF NOT EXISTS noa_jobs_key_time ON noa_jobs (key_id, created_at, id)",
    "CREATE INDEX IF NOT EXISTS noa_jobs_time ON noa_jobs (created_at, id)",
    "CREATE INDEX IF NOT EXISTS noa_jobs_parent ON noa_jobs (parent_id)",
    """CREATE TABLE IF NOT EXISTS noa_job_attempts (
        job_id TEXT NOT NULL,
        attempt BIGINT NOT NULL,
        token BIGINT NOT NULL,
        owner TEXT,
        started_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION,
        outcome TEXT,
        error TEXT,
        PRIMARY KEY (job_id, attempt)
    )""",
)
