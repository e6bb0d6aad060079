"""QueueBridge-<name>: one deployment per ``queues:`` entry. Each replica consumes the
bridge's source on its broker, stores every message as a job (the JobRunner runs it), and
publishes the answers (``noa/queues/worker.py``); the broker is acknowledged only once a job
is stored, so a replica killed at any point loses nothing (Serve starts another; the broker
delivers again what the dead one held).

Each replica reports the source's lag (``record_autoscaling_stats``); with ``scaling.
max_replicas`` above ``min_replicas`` the deployment is scaled on it by ``bridge_scaling.
lag_policy``. Metrics and health go to the HealthActor (``/metrics``, ``/health/ready``,
``/status``, the dashboard).
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.gateway import wake_runner
from deployments.startup import check_where_served
from noa.build import queues as queues_build
from noa.config import parse_config
from noa.jobs.waking import Waker
from noa.observability.error_reporting import init_error_reporting
from noa.observability.logs import configure_logging
from noa.routing.health_center import RemoteHealth


@serve.deployment
class QueueBridge:
    async def __init__(  # type: ignore[misc]  # Serve awaits async constructors
        self,
        config: dict[str, Any],
        name: str,
        health: DeploymentHandle,
        runner: DeploymentHandle | None = None,
    ) -> None:
        configure_logging()
        init_error_reporting()
        cfg = parse_config(config)
        await check_where_served(cfg)  # one SQL store for every node, or no start
        replica = str(serve.get_replica_context().replica_id)
        # a job was stored: the runner looks now (it polls anyway); one call at a time
        notify = Waker(lambda: wake_runner(runner)) if runner is not None else lambda: None
        self.parts = queues_build.bridge(
            cfg, name, replica, notify=notify, report=RemoteHealth(health).report_bridge
        )
        self.lag_per_replica = self.parts.config.scaling.lag_per_replica
        self.parts.start()

    async def __del__(self) -> None:
        await self.parts.aclose()

    def check_health(self) -> None:
        """Serve restarts a replica whose worker died."""
        self.parts.check()

    def status(self) -> dict[str, Any]:
        return self.parts.status()

    def record_autoscaling_stats(self) -> dict[str, float]:
        """The autoscaler's inputs (``bridge_scaling.lag_policy``)."""
        lag = self.parts.lag()
        return {"lag": float(lag or 0), "lag_per_replica": float(self.lag_per_replica)}
