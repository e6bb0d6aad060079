"""The job schedules table (migration 5): recurring jobs by cron expression and time zone.

Kept beside ``migrations.py``, which lists it as migration 5 (as ``job_tables.py`` is 4).

- ``noa_job_schedules``: one row per schedule. ``body``, ``metadata`` are JSON text, ``priority``
  the job priority's number, ``enabled`` 0 or 1 (one integer type on both databases).
  ``next_due_at`` is the next due time (epoch seconds) not yet fired; firing it is an
  ``UPDATE ... WHERE next_due_at = <the value read>``, so of replicas racing to fire the same
  due time one advances it (and ``noa_jobs``'s unique ``(schedule_id, due_at)`` makes one job).

``IF NOT EXISTS`` throughout: re-applying it to a database that has the table changes nothing.
"""

from __future__ import annotations

SCHEDULE_TABLES: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS noa_job_schedules (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL DEFAULT '',
        name TEXT,
        cron TEXT NOT NULL,
        timezone TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        body TEXT NOT NULL,
        priority BIGINT NOT NULL DEFAULT 1,
        callback_url TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        max_attempts BIGINT NOT NULL DEFAULT 3,
        enabled BIGINT NOT NULL DEFAULT 1,
        next_due_at DOUBLE PRECISION NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    )""",
    # firing: the enabled schedules by due time; listing a key's schedules
    "CREATE INDEX IF NOT EXISTS noa_job_schedules_due ON noa_job_schedules (enabled, next_due_at)",
    "CREATE INDEX IF NOT EXISTS noa_job_schedules_key"
    " ON noa_job_schedules (key_id, created_at, id)",
)
