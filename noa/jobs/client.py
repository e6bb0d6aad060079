"""Submitting and awaiting jobs from Python: from another Ray job or driver, over NOA's app
handle (``serve.get_app_handle("noa")``), with no HTTP in between.

    from ray import serve
    from noa.jobs.client import JobClient

    jobs = JobClient(serve.get_app_handle("noa"))
    job = await jobs.submit({"endpoint": "/v1/embeddings",
                             "body": {"model": "smollm2", "input": "hello"}},
                            idempotency_key="doc-42")
    done = await jobs.wait(job["id"])        # the finished job: "result" or "error"
    answer = await jobs.run({...})           # submit and wait; raises JobFailed unless completed

Jobs submitted over the handle belong to the master key unless ``api_key`` is given (then they
are that key's: its limits, budget and usage). ``wait`` polls on the server (``wait_job``), so a
long wait costs one handle call per ``poll_s``-capped step, not one per poll.

``wait_until_final`` is the server side: it reads the store with a pause that grows with the time
waited (2 ms at first, for the idle system's tens of milliseconds; a fifth of the wait so far; at
most ``poll_s``) on an injected clock and sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from noa.jobs.model import Job
from noa.jobs.store import JobStore

Body = dict[str, Any]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
FIRST_PAUSE_S = 0.002
PAUSE_SHARE = 0.2


class JobFailed(Exception):
    """A job that ended without a result: its status and error object."""

    def __init__(self, job: Body) -> None:
        self.job = job
        error = job.get("error") or {}
        super().__init__(f"job {job.get('id')} is {job.get('status')}: {error.get('message')}")


async def wait_until_final(
    store: JobStore,
    job_id: str,
    key_id: str | None = None,
    timeout_s: float = 60.0,
    poll_s: float = 0.5,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> Job | None:
    """The job once it is final, or as it stands when ``timeout_s`` passed; None when there is
    no such job (of ``key_id``, when given). The store is read again after a pause of a fifth
    of the time waited so far (at least ``FIRST_PAUSE_S``, at most ``poll_s``): a job that
    ends is seen at most ~20% late, in a few dozen reads over a minute."""
    started = clock()
    deadline = started + max(0.0, timeout_s)
    while True:
        job = await store.get(job_id, key_id)
        if job is None or job.status.final:
            return job
        now = clock()
        left = deadline - now
        if left <= 0:
            return job
        pause = min(poll_s, max(FIRST_PAUSE_S, (now - started) * PAUSE_SHARE))
        await sleep(min(pause, left))


class JobClient:
    """Jobs over a Gateway handle (anything with ``submit_job``/``get_job``/``wait_job``/
    ``cancel_job`` methods called as ``handle.method.remote(...)``)."""

    def __init__(self, handle: Any, api_key: str | None = None) -> None:
        self.handle = handle
        self.api_key = api_key

    async def submit(self, job: Body, idempotency_key: str | None = None) -> Body:
        """The job, as ``POST /v1/jobs`` returns it (202)."""
        result: Body = await self.handle.submit_job.remote(job, idempotency_key, self.api_key)
        return result

    async def get(self, job_id: str) -> Body:
        result: Body = await self.handle.get_job.remote(job_id, self.api_key)
        return result

    async def cancel(self, job_id: str) -> Body:
        result: Body = await self.handle.cancel_job.remote(job_id, self.api_key)
        return result

    async def wait(self, job_id: str, timeout_s: float = 600.0, step_s: float = 30.0) -> Body:
        """The finished job (TimeoutError when it is not final after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            job: Body = await self.handle.wait_job.remote(
                job_id, max(0.0, min(step_s, left)), self.api_key
            )
            if job["status"] in ("completed", "failed", "dead", "cancelled"):
                return job
            if left <= 0:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout_s} s")

    async def run(
        self, job: Body, idempotency_key: str | None = None, timeout_s: float = 600.0
    ) -> Body:
        """Submit and wait: the job's result (the synchronous endpoint's body); JobFailed when
        it failed, died or was cancelled."""
        submitted = await self.submit(job, idempotency_key)
        done = await self.wait(submitted["id"], timeout_s)
        if done["status"] != "completed":
            raise JobFailed(done)
        result: Body = done["result"]
        return result
