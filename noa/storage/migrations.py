"""The database schema, as numbered migrations applied at start-up (SQLite and PostgreSQL alike).

``migrate`` applies, in one transaction under the database's lock, every migration newer than
the version recorded in ``noa_schema``: replicas starting together apply each exactly once.
A migration is never edited once released; changes are new migrations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from noa.storage.batch_tables import BATCH_TABLES
from noa.storage.bridge_tables import BRIDGE_TABLES
from noa.storage.db import Database
from noa.storage.job_tables import JOB_TABLES
from noa.storage.schedule_tables import SCHEDULE_TABLES
from noa.storage.webhook_tables import WEBHOOK_TABLES

SCHEMA_TABLE = """
CREATE TABLE IF NOT EXISTS noa_schema (
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL
)"""
PG_LOCK_ID = 0x6E6F61  # "noa": one advisory lock for migrations


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "keys, teams and usage",
        (
            """CREATE TABLE noa_teams (
                id TEXT PRIMARY KEY,
                rpm BIGINT, tpm BIGINT,
                budget_usd DOUBLE PRECISION, budget_period TEXT,
                models TEXT, metadata TEXT NOT NULL DEFAULT '{}',
                created_at DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE noa_api_keys (
                id TEXT PRIMARY KEY,
                prefix TEXT NOT NULL,
                hash TEXT NOT NULL UNIQUE,
                name TEXT,
                team TEXT,
                scopes TEXT NOT NULL DEFAULT '[]',
                models TEXT,
                rpm BIGINT, tpm BIGINT,
                budget_usd DOUBLE PRECISION, budget_period TEXT,
                metadata TEXT NOT NULL DEFAULT '{}',
                created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION,
                revoked_at DOUBLE PRECISION,
                rotated_from TEXT
            )""",
            "CREATE INDEX noa_api_keys_team ON noa_api_keys (team)",
            """CREATE TABLE noa_usage (
                id TEXT PRIMARY KEY,
                created_at DOUBLE PRECISION NOT NULL,
                correlation_id TEXT,
                key_id TEXT, team TEXT,
                operation TEXT NOT NULL,
                model TEXT, provider TEXT, upstream TEXT,
                prompt_tokens BIGINT NOT NULL DEFAULT 0,
                completion_tokens BIGINT NOT NULL DEFAULT 0,
                cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
                latency_ms DOUBLE PRECISION,
                ttft_ms DOUBLE PRECISION,
                cache TEXT,
                status BIGINT NOT NULL
            )""",
            "CREATE INDEX noa_usage_key_time ON noa_usage (key_id, created_at)",
            "CREATE INDEX noa_usage_team_time ON noa_usage (team, created_at)",
            "CREATE INDEX noa_usage_time ON noa_usage (created_at)",
        ),
    ),
    Migration(
        2,
        "response cache (L3)",
        (
            # IF NOT EXISTS: databases from before this migration may hold the table already
            # (the L3 tier used to create it). BYTEA is PostgreSQL's bytes; SQLite keeps a
            # blob as it is whatever the declared type.
            """CREATE TABLE IF NOT EXISTS noa_response_cache (
                key TEXT PRIMARY KEY,
                value BYTEA NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL,
                stored_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS noa_response_cache_expires"
            " ON noa_response_cache (expires_at)",
            "CREATE INDEX IF NOT EXISTS noa_response_cache_stored"
            " ON noa_response_cache (stored_at)",
        ),
    ),
    Migration(
        3,
        "settings; the API keys hashed before the key secret was stored",
        (
            # values NOA makes once and every process sharing the database reads (the secret
            # API keys are hashed under: noa/access/key_secret.py)
            """CREATE TABLE noa_settings (
                name TEXT PRIMARY KEY,
                value TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL
            )""",
            # 1: hashed under the secret NOA derived by itself before (from the master key, or
            # $NOA_HOME/key-secret); such a key is re-hashed under the current secret on use
            "ALTER TABLE noa_api_keys ADD COLUMN legacy_hash BIGINT NOT NULL DEFAULT 0",
            "UPDATE noa_api_keys SET legacy_hash = 1",
        ),
    ),
    Migration(4, "jobs", JOB_TABLES),
    Migration(5, "job schedules", SCHEDULE_TABLES),
    Migration(6, "files and batches", BATCH_TABLES),
    Migration(7, "webhook deliveries", WEBHOOK_TABLES),
    Migration(
        8,
        "the span that submitted a job or created a batch",
        (  # W3C traceparent: a job's span joins (a batch line's: links to) the request's trace
            "ALTER TABLE noa_jobs ADD COLUMN traceparent TEXT",
            "ALTER TABLE noa_batches ADD COLUMN traceparent TEXT",
        ),
    ),
    Migration(9, "queue bridges: the reply outbox, each job's model", BRIDGE_TABLES),
)


async def current_version(db: Database) -> int:
    await db.execute(SCHEMA_TABLE)
    row = await db.fetchrow("SELECT max(version) AS version FROM noa_schema")
    return int(row["version"] or 0) if row else 0


async def migrate(db: Database, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Apply what is missing; the versions applied now (empty when up to date)."""
    applied: list[int] = []
    async with db.transaction() as tx:
        if tx.dialect == "postgres":
            await tx.execute(f"SELECT pg_advisory_xact_lock({PG_LOCK_ID})")
        version = await current_version(tx)
        for migration in migrations:
            if migration.version <= version:
                continue
            for statement in migration.statements:
                await tx.execute(statement)
            await tx.execute(
                "INSERT INTO noa_schema (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                time.time(),
            )
            applied.append(migration.version)
    return applied
