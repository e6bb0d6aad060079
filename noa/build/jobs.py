"""The job system wired over a Gateway's cores: the store and schedules the job API writes to,
and a runner that executes jobs through the same service (routing, cache, limits, budgets and
usage) as synchronous requests.

``api(parts, notify)`` is what a Gateway replica serves (``/v1/jobs``, ``/v1/admin/schedules``);
``runner(parts, owner)`` is what a JobRunner replica runs: ``JobParts.start()`` starts the runner
loop and the tick (due schedules fired, the queue depth measured) in the running event loop,
``aclose()`` stops claiming and lets running jobs finish for a while (then cancels them: their
leases expire and they run again elsewhere). Tests run both in one process.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from noa.access.identity import Authenticator
from noa.build.gateway import GatewayParts
from noa.config import JobsConfig
from noa.errors import NotFoundError
from noa.http.batches import BatchesApi, batches_router, files_router
from noa.http.callers import Caller, caller_of
from noa.http.jobs import JobsApi, submit
from noa.jobs.batches import BatchStore
from noa.jobs.client import wait_until_final
from noa.jobs.executor import JobExecutor, KeyPrincipals
from noa.jobs.files import FileStore
from noa.jobs.job_metrics import JobMetrics
from noa.jobs.model import Job
from noa.jobs.runner import JobRunner
from noa.jobs.schedules import ScheduleStore
from noa.jobs.store import JobStore
from noa.jobs.webhook_outbox import WebhookOutbox
from noa.jobs.webhook_signing import WebhookSecret
from noa.jobs.webhooks import WebhookSender

logger = logging.getLogger("noa.jobs")

Clock = Callable[[], float]
Environ = Mapping[str, str]
CLEANUP_S = 300.0
UPLOAD_OVERHEAD = 1024 * 1024  # a multipart body's boundaries and fields around the file
Tick = Callable[[], Awaitable[object]]
TICK_S = 1.0  # schedules fired, batches advanced, webhooks swept, depth measured
DRAIN_S = 15.0  # how long a stopping runner lets its running jobs finish


def stores(parts: GatewayParts, clock: Clock = time.time) -> tuple[JobStore, ScheduleStore]:
    """The job and schedule stores; each job made final here is counted in this replica's
    metrics (``noa_jobs_total``, latencies), whoever ends it (a runner, a cancel, a lost lease)."""
    store = JobStore(parts.db, clock, on_final=JobMetrics(parts.metrics).finished)
    return store, ScheduleStore(parts.db, clock, jobs=store)


def secrets(parts: GatewayParts, environ: Environ | None = None) -> list[WebhookSecret]:
    """The webhook signing secrets (``jobs.webhooks.secret_env``); none: callbacks refused."""
    return [WebhookSecret.parse(s) for s in parts.config.jobs.webhooks.secrets(environ)]


def outbox(
    parts: GatewayParts,
    environ: Environ | None = None,
    metrics: JobMetrics | None = None,
    clock: Clock = time.time,
) -> WebhookOutbox | None:
    keys = secrets(parts, environ)
    if not keys:
        return None
    hooks = parts.config.jobs.webhooks
    sender = WebhookSender(
        keys, allow=hooks.allow_hosts, max_attempts=1, timeout_s=hooks.timeout_s, clock=clock
    )
    return WebhookOutbox(
        parts.db,
        sender,
        clock=clock,
        max_attempts=hooks.max_attempts,
        lease_s=max(60.0, hooks.timeout_s * 3),
        metrics=metrics,
    )


def api(
    parts: GatewayParts,
    notify: Callable[[], None] = lambda: None,
    environ: Environ | None = None,
) -> JobsApi:
    """The job, schedule, file and batch APIs of a Gateway replica (the file and batch routes
    and the upload's body limit go on ``parts``); ``notify`` wakes a runner (a job or a batch
    was submitted)."""
    cfg = parts.config.jobs
    store, schedules = stores(parts)
    hooks = outbox(parts, environ)
    files = FileStore(parts.db)
    batches = BatchesApi(
        files,
        BatchStore(parts.db, store, files, notify=notify),
        notify=notify,
        max_file_bytes=cfg.max_file_bytes,
        webhook_allow=cfg.webhooks.allow_hosts,
    )
    parts.routers = (files_router(batches), batches_router(batches))
    parts.body_limits = {"/v1/files": cfg.max_file_bytes + UPLOAD_OVERHEAD}
    return JobsApi(
        store,
        schedules,
        notify=notify,
        webhook_allow=cfg.webhooks.allow_hosts,
        deliveries=hooks.deliveries if hooks is not None else None,
        callbacks=hooks is not None,
    )


@dataclass
class JobParts:
    """A runner replica's job system: see the module docstring."""

    config: JobsConfig
    store: JobStore
    schedules: ScheduleStore
    runner: JobRunner
    ticks: list[Tick] = field(default_factory=list)
    tick_s: float = TICK_S
    drain_s: float = DRAIN_S
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _soon: asyncio.Event = field(default_factory=asyncio.Event)  # a batch waits: tick now
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        """Run the runner and the tick in the running event loop."""
        if self._tasks:
            return
        self._stop.clear()
        self._tasks = [
            asyncio.create_task(self.runner.run(self._stop), name="noa-job-runner"),
            asyncio.create_task(self._tick_forever(), name="noa-job-tick"),
        ]

    def notify(self) -> None:
        """Something was submitted: look for due jobs, and tick (a batch to advance) now."""
        self.runner.notify()
        self._soon.set()

    def check(self) -> None:
        """Raise when the runner or the tick has stopped although nobody stopped them."""
        for task in self._tasks:
            if task.done():
                why = "cancelled" if task.cancelled() else repr(task.exception())
                raise RuntimeError(f"{task.get_name()} stopped: {why}")

    async def tick(self) -> None:
        """One pass of the periodic work; a failing part is logged and the rest still runs."""
        for work in self.ticks:
            try:
                await work()
            except Exception:
                logger.warning("job tick %s failed", getattr(work, "__name__", work), exc_info=True)

    async def _tick_forever(self) -> None:
        while not self._stop.is_set():
            self._soon.clear()
            await self.tick()
            waits = [asyncio.ensure_future(e.wait()) for e in (self._stop, self._soon)]
            try:
                await asyncio.wait(waits, timeout=self.tick_s, return_when=FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    async def aclose(self) -> None:
        """Stop claiming; let running jobs finish for ``drain_s``, then cancel them."""
        self._stop.set()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=self.drain_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                logger.warning("job task %s ended with an error", task.get_name())


def owner_name(replica: str) -> str:
    """A runner's lease owner: its replica, and this start (a restarted replica is another)."""
    return f"{replica}:{uuid.uuid4().hex[:8]}"


def runner(
    parts: GatewayParts,
    owner: str | None = None,
    clock: Clock = time.time,
    environ: Environ | None = None,
) -> JobParts:
    """The job system of a runner replica over ``parts`` (routed as its Gateways route:
    ``deployment.hot_path``): the runner, and a tick that fires due
    schedules, advances batches, sends due webhooks and measures the queues."""
    cfg = parts.config.jobs
    owner = owner or owner_name(parts.placement.replica)
    store, schedules = stores(parts, clock)
    metrics = JobMetrics(parts.metrics)
    execute = JobExecutor(
        parts.service, KeyPrincipals(parts.access.keys, parts.access.teams), parts.tracing
    )
    job_runner = JobRunner(
        store,
        execute,
        owner=owner,
        clock=clock,
        lease_s=cfg.lease_s,
        concurrency=cfg.concurrency,
        per_model=cfg.per_model,
        per_key=cfg.per_key,
        base_backoff_s=cfg.base_backoff_s,
        cap_backoff_s=cfg.cap_backoff_s,
        poll_s=cfg.poll_s,
    )
    jobs = JobParts(cfg, store, schedules, job_runner)
    files = FileStore(parts.db, clock)
    batches = BatchStore(parts.db, store, files, clock, notify=job_runner.notify)
    hooks = outbox(parts, environ, metrics, clock)

    async def fire_schedules() -> None:
        if await schedules.fire_due():
            job_runner.notify()

    async def advance_batches() -> None:
        for _ in range(8):  # a batch may take several steps at once (validated, then done)
            if not await batches.advance(owner, lease_s=max(60.0, cfg.lease_s)):
                break

    async def send_webhooks() -> None:
        if hooks is not None:
            for _ in range(64):  # up to 16 each: what is due now, within bounds
                if not await hooks.sweep(owner) or jobs._stop.is_set():
                    break

    swept = [clock()]

    async def measure() -> None:
        metrics.depth(await store.queue_depths())
        if clock() - swept[0] >= CLEANUP_S:  # uploads and outputs cut short, invisible
            swept[0] = clock()
            await files.cleanup()

    jobs.ticks.extend([fire_schedules, advance_batches, send_webhooks, measure])
    return jobs


@dataclass
class HandleJobs:
    """The job methods of the app handle: the job API's bodies and answers, for Python callers
    (``noa/jobs/client.py``). Without ``api_key`` a caller acts as the master key."""

    api: JobsApi
    auth: Authenticator

    async def _who(self, api_key: str | None) -> Caller:
        if api_key is None:
            return caller_of(None)
        return caller_of(await self.auth.authenticate(api_key))

    async def submit(
        self, job: dict[str, Any], idempotency_key: str | None, api_key: str | None
    ) -> dict[str, Any]:
        submitted, _ = await submit(self.api, job, await self._who(api_key), idempotency_key)
        return submitted.public()

    async def get(self, job_id: str, api_key: str | None) -> dict[str, Any]:
        return (await self._found(job_id, await self._who(api_key))).public()

    async def cancel(self, job_id: str, api_key: str | None) -> dict[str, Any]:
        who = await self._who(api_key)
        job = await self.api.store.cancel(job_id, who.scope)
        if job is None:
            raise _missing(job_id)
        return job.public()

    async def wait(self, job_id: str, timeout_s: float, api_key: str | None) -> dict[str, Any]:
        who = await self._who(api_key)
        job = await wait_until_final(self.api.store, job_id, who.scope, min(timeout_s, 300.0))
        if job is None:
            raise _missing(job_id)
        return job.public()

    async def _found(self, job_id: str, who: Caller) -> Job:
        job = await self.api.store.get(job_id, who.scope)
        if job is None:
            raise _missing(job_id)
        return job


def _missing(job_id: str) -> NotFoundError:
    return NotFoundError(f"No job `{job_id}`", param="job_id", code="job_not_found")
