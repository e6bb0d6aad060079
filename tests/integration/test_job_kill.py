"""Durability proven by killing: a runner process SIGKILLed while it holds a job loses its lease,
the job runs again under a new token, the dead runner's token is refused, and the job has one
result; a job whose submit returned survives its submitter being killed at once. On a SQLite
file and on the suite's PostgreSQL, with separate processes."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import pytest
from databases import postgres_dsn

from noa.jobs.model import JobSpec, JobStatus
from noa.jobs.store import JobStore
from noa.storage.db import Database

ROOT = Path(__file__).resolve().parents[2]

# The child: opens the same database, claims (or submits), says so on stdout once the write is
# committed, then waits to be killed.
CHILD = r"""
import asyncio, sys

async def main(mode: str, url: str, schema: str) -> None:
    from noa.jobs.model import JobSpec
    from noa.jobs.store import JobStore
    from noa.storage.db import PostgresDatabase, connect

    if schema:
        import asyncpg

        pool = await asyncpg.create_pool(
            url, min_size=1, max_size=1, server_settings={"search_path": schema}
        )
        db = PostgresDatabase(pool)
    else:
        db = await connect(url)
    store = JobStore(db)
    if mode == "claim":
        (claim,) = await store.claim("doomed-runner", lease_s=30)
        print("claimed", claim.job.id, claim.token, flush=True)
    else:
        job, created = await store.submit(
            JobSpec(endpoint="/v1/embeddings", body={"model": "e", "input": "x"}, key_id="key_k")
        )
        print("submitted", job.id, int(created), flush=True)
    await asyncio.sleep(3600)  # "mid-job": killed here

asyncio.run(main(*sys.argv[1:4]))
"""


async def child_says(db: Database, tmp_path: Path, mode: str) -> list[str]:
    """Run the child on ``db``'s database until it reports, SIGKILL it; its words."""
    if db.dialect == "sqlite":
        url, schema = f"sqlite:///{tmp_path}/noa.db", ""
    else:
        row = await db.fetchrow("SELECT current_schema() AS s")
        assert row is not None
        url, schema = postgres_dsn(), row["s"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        mode,
        url,
        schema,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        if not line:
            pytest.fail(f"the child said nothing: {(await proc.stderr.read()).decode()}")
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return line.decode().split()


async def test_a_killed_runner_loses_its_job_and_it_completes_once(
    db: Database, tmp_path: Path
) -> None:
    job, _ = await JobStore(db).submit(
        JobSpec(endpoint="/v1/chat/completions", body={"model": "m", "messages": []})
    )
    store = JobStore(db, clock=lambda: time.time() + 3600)  # well past the child's lease

    said, job_id, token = await child_says(db, tmp_path, "claim")
    assert (said, job_id, int(token)) == ("claimed", job.id, 1)
    orphan = await store.get(job.id)
    assert orphan is not None and orphan.status is JobStatus.RUNNING
    assert orphan.lease_owner == "doomed-runner"
    assert await JobStore(db).claim("too-early", lease_s=30) == []  # the lease still holds

    (claim,) = await store.claim("survivor", lease_s=30)
    assert claim.job.id == job.id and claim.token == 2
    assert not await store.complete(job.id, int(token), {"by": "the dead runner"})
    assert await store.complete(job.id, claim.token, {"by": "survivor"})
    assert not await store.complete(job.id, int(token), {"by": "the dead runner"})
    done = await store.get(job.id)
    assert done is not None and done.status is JobStatus.COMPLETED
    assert done.result == {"by": "survivor"}
    attempts = await store.attempts(job.id)
    assert [(a.owner, a.outcome) for a in attempts] == [
        ("doomed-runner", "lease_expired"),
        ("survivor", "completed"),
    ]
    rows = await db.fetch("SELECT result FROM noa_jobs WHERE id = $1", job.id)
    assert len(rows) == 1


async def test_a_submitted_job_survives_its_submitter_killed_at_once(
    db: Database, tmp_path: Path
) -> None:
    said, job_id, created = await child_says(db, tmp_path, "submit")
    assert (said, created) == ("submitted", "1")
    store = JobStore(db)
    job = await store.get(job_id, key_id="key_k")
    assert job is not None and job.status is JobStatus.QUEUED
    assert job.endpoint == "/v1/embeddings" and job.body == {"model": "e", "input": "x"}
    (claim,) = await store.claim("runner", lease_s=30)
    assert claim.job.id == job_id
    assert await store.complete(job_id, claim.token, {"object": "list", "data": []})
