"""The JobRunner: claims due jobs from the SQL store and runs them as a Gateway runs a request
(the same keys, limits, budgets, cache and usage; routed in the replica with ``hot_path:
inline``, by the Router deployment with ``hot_path: router``; local models on the LlamaCpp
replicas), so a batch of ten thousand lines fans out over the runner's replicas, the providers
and the LlamaCpp replicas.

Each replica is one runner (its own lease owner); several never run one job at once (leases and
fencing tokens, ``noa/jobs/store.py``). A replica also fires due schedules, advances batches,
delivers webhooks and measures the queue. ``notify()`` (the Gateway calls it, fire-and-forget,
on each submit) wakes an idle runner at once instead of at its next poll.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.startup import check_where_served
from noa.build import gateway
from noa.build import jobs as jobs_build
from noa.config import parse_config


@serve.deployment
class JobRunner:
    async def __init__(  # type: ignore[misc]  # Serve awaits async constructors
        self,
        config: dict[str, Any],
        local: dict[str, DeploymentHandle],
        router: DeploymentHandle,
        health: DeploymentHandle,
        cache: DeploymentHandle,
        limiter: DeploymentHandle | None = None,
    ) -> None:
        replica = str(serve.get_replica_context().replica_id)
        cfg = parse_config(config)
        await check_where_served(cfg)  # one SQL store for every node, or no start
        prefix = ""
        if limiter is None and not cfg.redis.url():  # one Gateway: its limiter decides
            limiter = serve.get_deployment_handle("Gateway", cfg.deployment.app_name)
            prefix = "limiter_"
        self.parts = gateway.served(
            cfg,
            local,
            router,
            health,
            cache,
            limiter,
            replica,
            limiter_prefix=prefix,
        )
        self.jobs = jobs_build.runner(self.parts)
        self.parts.start()
        self.jobs.start()

    async def __del__(self) -> None:
        await self.jobs.aclose()
        await self.parts.aclose()

    def notify(self) -> None:
        """A job was submitted: look for due jobs now."""
        self.jobs.notify()

    def check_health(self) -> None:
        """Serve restarts a replica whose runner loop died (its jobs' leases expire, another
        runner takes them)."""
        self.jobs.check()
