"""The Gateway: NOA's HTTP ingress, and the app handle Python callers get.

``serve.get_app_handle("noa")`` returns this deployment's handle. Its methods take the same JSON
bodies as the HTTP API and return the same bodies; a body with ``"stream": true`` streams chunks
through ``handle.options(stream=True)``:

    handle = serve.get_app_handle("noa")
    answer = await handle.chat.remote({"model": "smollm2", "messages": [...]})
    async for chunk in handle.options(stream=True).chat.remote({..., "stream": True}): ...
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.startup import check_where_served
from noa.access.remote import LimiterEndpoint
from noa.build import gateway
from noa.build import jobs as jobs_build
from noa.build.jobs import HandleJobs
from noa.config import parse_config
from noa.errors import NotFoundError
from noa.jobs.waking import Waker
from noa.wire.operations import Operation

Body = dict[str, Any]
logger = logging.getLogger("noa.gateway")


@serve.deployment
@serve.ingress()
class Gateway:
    async def __init__(  # type: ignore[misc]  # Serve awaits async constructors
        self,
        config: dict[str, Any],
        local: dict[str, DeploymentHandle],
        router: DeploymentHandle,
        health: DeploymentHandle,
        cache: DeploymentHandle,
        limiter: DeploymentHandle | None = None,
        runner: DeploymentHandle | None = None,
        bridges: dict[str, DeploymentHandle] | None = None,
    ) -> None:
        replica = str(serve.get_replica_context().replica_id)
        cfg = parse_config(config)
        await check_where_served(cfg)  # refuses to start where it would be unsafe
        self.parts = gateway.served(cfg, local, router, health, cache, limiter, replica)
        self.jobs: HandleJobs | None = None
        if runner is not None:  # jobs enabled: the job API here, run by the JobRunner
            # fire and forget, one call at a time: a runner that misses it polls anyway
            notify = Waker(lambda: wake_runner(runner))
            self.parts.jobs = jobs_build.api(self.parts, notify=notify)
            self.jobs = HandleJobs(self.parts.jobs, self.parts.access.auth)
        self.limits = LimiterEndpoint(self.parts.access.limiter)
        self.bridges = dict(bridges or {})  # the queue bridges (their health: the HealthActor)
        self.parts.start()

    async def __del__(self) -> None:
        await self.parts.aclose()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self.parts.app()

    # -- Python callers ----------------------------------------------------------------------

    async def chat(self, body: Body) -> Body | AsyncIterator[Body]:
        """Same body and result as ``POST /v1/chat/completions``."""
        return await self.parts.service.call(Operation.CHAT, body)

    async def completions(self, body: Body) -> Body | AsyncIterator[Body]:
        """Same body and result as ``POST /v1/completions``."""
        return await self.parts.service.call(Operation.COMPLETIONS, body)

    async def embeddings(self, body: Body) -> Body:
        """Same body and result as ``POST /v1/embeddings``."""
        result = await self.parts.service.call(Operation.EMBEDDINGS, body)
        assert isinstance(result, dict)
        return result

    # -- jobs (noa/jobs/client.py's JobClient calls these) -------------------------------------

    async def submit_job(
        self, job: Body, idempotency_key: str | None = None, api_key: str | None = None
    ) -> Body:
        """Same body and result as ``POST /v1/jobs`` (without ``api_key``: the master key's)."""
        return await self._jobs().submit(job, idempotency_key, api_key)

    async def get_job(self, job_id: str, api_key: str | None = None) -> Body:
        return await self._jobs().get(job_id, api_key)

    async def cancel_job(self, job_id: str, api_key: str | None = None) -> Body:
        return await self._jobs().cancel(job_id, api_key)

    async def wait_job(
        self, job_id: str, timeout_s: float = 30.0, api_key: str | None = None
    ) -> Body:
        """The job once it is final, or as it stands after ``timeout_s`` (at most 300)."""
        return await self._jobs().wait(job_id, timeout_s, api_key)

    # -- the JobRunner's limits (one Gateway, no Redis: this replica's limiter decides) ---------

    async def limiter_apply_many(self, ops: list[Any]) -> list[dict[str, Any] | None]:
        return await self.limits.apply_many(ops)

    async def limiter_revoke(self, principal: str) -> None:
        await self.limits.revoke(principal)

    def _jobs(self) -> HandleJobs:
        if self.jobs is None:
            raise NotFoundError(
                "Jobs are disabled here (jobs.enabled: false)", code="jobs_disabled"
            )
        return self.jobs

    def cache_stats(self) -> Body:
        """This replica's response cache counters ({"enabled": false} when it is off)."""
        return self.parts.probes.cache_stats()

    def models(self) -> Body:
        """Same result as ``GET /v1/models``."""
        return self.parts.service.list_models()

    def model(self, model_id: str) -> Body:
        """Same result as ``GET /v1/models/{model_id}``."""
        return self.parts.service.get_model(model_id)


async def wake_runner(runner: DeploymentHandle) -> None:
    try:
        await runner.notify.remote()
    except Exception:  # the runner is restarting: it finds the job at its next poll
        logger.debug("waking a job runner failed", exc_info=True)
