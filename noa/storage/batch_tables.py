"""The file and batch tables (migration 6): uploaded and NOA-made files, batches, and each
batch's lines.

Kept beside ``migrations.py``, which lists them as migration 6 (see ``job_tables.py`` for why
the statements live in a module of their own).

- ``noa_files``: one row per file. ``status`` is ``uploading`` while its chunks are written
  (such a row is invisible: a crash mid-upload leaves one, which ``FileStore.cleanup`` removes
  by ``updated_at``), then ``processed`` (or ``error``). ``bytes`` counts the file's bytes.
- ``noa_file_chunks``: a file's content as UTF-8 text in ~1 MiB pieces, ``seq`` from 0 (TEXT,
  not bytes: a batch file is JSONL, and PostgreSQL's TEXT holds any UTF-8 but NUL).
- ``noa_batches``: one row per batch, with OpenAI's timestamps. ``lines_read`` is the
  validation checkpoint (how many of the input file's lines were turned into jobs or errors);
  ``lease_owner``, ``lease_expires_at`` and ``token`` let one replica at a time advance a batch
  (every write of an advance is guarded by the token it claimed with). The ``*_count`` columns
  are the request counts as the batch ended (a running batch's are counted live).
- ``noa_batch_requests``: one row per valid line, unique ``(batch_id, custom_id)``: a second
  line with the same ``custom_id`` is an error. Its job is the one with idempotency key
  ``<batch id>:<line>`` under the batch's key.
- ``noa_batch_line_errors``: one row per invalid line, for the error file.
- ``noa_jobs (parent_id, status)``: a batch's jobs by status (counts, the output pages).
"""

from __future__ import annotations

BATCH_TABLES: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS noa_files (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL DEFAULT '',
        purpose TEXT NOT NULL,
        filename TEXT NOT NULL,
        bytes BIGINT NOT NULL DEFAULT 0,
        chunks BIGINT NOT NULL DEFAULT 0,
        status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION
    )""",
    "CREATE INDEX IF NOT EXISTS noa_files_key_time ON noa_files (key_id, created_at, id)",
    "CREATE INDEX IF NOT EXISTS noa_files_time ON noa_files (created_at, id)",
    "CREATE INDEX IF NOT EXISTS noa_files_status ON noa_files (status, updated_at)",
    """CREATE TABLE IF NOT EXISTS noa_file_chunks (
        file_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (file_id, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS noa_batches (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL DEFAULT '',
        team TEXT,
        endpoint TEXT NOT NULL,
        input_file_id TEXT NOT NULL,
        completion_window TEXT NOT NULL,
        status TEXT NOT NULL,
        metadata TEXT,
        callback_url TEXT,
        output_file_id TEXT,
        error_file_id TEXT,
        errors TEXT,
        total_count BIGINT NOT NULL DEFAULT 0,
        completed_count BIGINT NOT NULL DEFAULT 0,
        failed_count BIGINT NOT NULL DEFAULT 0,
        lines_read BIGINT NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires_at DOUBLE PRECISION,
        token BIGINT NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL,
        in_progress_at DOUBLE PRECISION,
        expires_at DOUBLE PRECISION NOT NULL,
        finalizing_at DOUBLE PRECISION,
        completed_at DOUBLE PRECISION,
        failed_at DOUBLE PRECISION,
        expired_at DOUBLE PRECISION,
        cancelling_at DOUBLE PRECISION,
        cancelled_at DOUBLE PRECISION,
        updated_at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS noa_batches_key_time ON noa_batches (key_id, created_at, id)",
    "CREATE INDEX IF NOT EXISTS noa_batches_time ON noa_batches (created_at, id)",
    "CREATE INDEX IF NOT EXISTS noa_batches_due ON noa_batches (status, updated_at)",
    """CREATE TABLE IF NOT EXISTS noa_batch_requests (
        batch_id TEXT NOT NULL,
        custom_id TEXT NOT NULL,
        line BIGINT NOT NULL,
        PRIMARY KEY (batch_id, custom_id)
    )""",
    "CREATE INDEX IF NOT EXISTS noa_batch_requests_line ON noa_batch_requests (batch_id, line)",
    """CREATE TABLE IF NOT EXISTS noa_batch_line_errors (
        batch_id TEXT NOT NULL,
        line BIGINT NOT NULL,
        custom_id TEXT,
        code TEXT NOT NULL,
        message TEXT NOT NULL,
        param TEXT,
        PRIMARY KEY (batch_id, line)
    )""",
    "CREATE INDEX IF NOT EXISTS noa_jobs_parent_status ON noa_jobs (parent_id, status)",
)
