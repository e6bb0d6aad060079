"""The webhook outbox tables (migration 7): deliveries to send, and every attempt at one.

Kept beside ``migrations.py``, which lists them as migration 7 (see ``job_tables.py`` for why
the statements live in a module of their own).

- ``noa_webhook_deliveries``: one row per event to deliver, written in the transaction that
  made its subject (a job, a batch) final. ``id`` is the event id (``evt_...``), sent as the
  ``webhook-id`` of every attempt; ``payload`` is the exact JSON body sent, built when the row
  was written. ``version`` is the job's fencing token when it ended: a job redriven and
  finished again makes a new event, settling the same claim twice does not
  (``UNIQUE (kind, subject_id, version, event_type)``). ``status`` is ``pending`` (due at
  ``next_at``), ``delivered`` or ``failed``; a sweep holds a row it is sending under a lease
  (``lease_owner``, ``lease_expires_at``), and a row whose lease expired is due again.
- ``noa_webhook_attempts``: one row per attempt (``number`` from 1), its HTTP status or error.
"""

from __future__ import annotations

WEBHOOK_TABLES: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS noa_webhook_deliveries (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        subject_id TEXT NOT NULL,
        version BIGINT NOT NULL DEFAULT 0,
        url TEXT NOT NULL,
        event_type TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        next_at DOUBLE PRECISION NOT NULL,
        lease_owner TEXT,
        lease_expires_at DOUBLE PRECISION,
        last_status BIGINT,
        last_error TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        delivered_at DOUBLE PRECISION,
        UNIQUE (kind, subject_id, version, event_type)
    )""",
    # sweeping: the pending rows by due time (a leased row's next_at is its lease expiry)
    "CREATE INDEX IF NOT EXISTS noa_webhook_deliveries_due"
    " ON noa_webhook_deliveries (status, next_at)",
    "CREATE INDEX IF NOT EXISTS noa_webhook_deliveries_subject"
    " ON noa_webhook_deliveries (kind, subject_id, created_at)",
    """CREATE TABLE IF NOT EXISTS noa_webhook_attempts (
        delivery_id TEXT NOT NULL,
        number BIGINT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        status_code BIGINT,
        error TEXT,
        duration_ms DOUBLE PRECISION,
        PRIMARY KEY (delivery_id, number)
    )""",
)
