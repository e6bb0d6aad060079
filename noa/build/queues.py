"""A queue bridge wired from its ``queues:`` entry: the transport of its broker, the bridge
over the job store, the reply outbox, the worker, and the metrics it reports.

``bridge(config, name, replica)`` is what one replica of a ``QueueBridge-<name>`` deployment
runs (tests run it in-process too): ``start()`` runs the worker in the running loop,
``aclose()`` stops it (messages held and not acknowledged are the broker's to deliver again)
and closes the database.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from noa.build import access as access_build
from noa.build import routing
from noa.config import NoaConfig, QueueBridgeConfig
from noa.errors import ModelNotFoundError, NoaError
from noa.jobs.job_metrics import JobMetrics
from noa.jobs.model import MASTER_KEY_ID, Priority
from noa.jobs.replies import ReplyOutbox
from noa.jobs.store import JobStore
from noa.observability.metrics import Metrics, Snapshot
from noa.observability.metrics_push import MetricsPush
from noa.queues.bridge import Bridge, BridgeSettings
from noa.queues.transport import Endpoints, Transport
from noa.queues.worker import BridgeWorker, WorkerSettings
from noa.routing.registry import ModelRegistry
from noa.storage.db import Database

logger = logging.getLogger("noa.queues")
Environ = Mapping[str, str]
Report = Callable[[str, Snapshot, dict[str, Any]], Awaitable[object]]
TRANSPORTS = {
    "rabbitmq": ("noa.queues.rabbitmq", "RabbitMqTransport"),
    "kafka": ("noa.queues.kafka", "KafkaTransport"),
    "sqs": ("noa.queues.sqs", "SqsTransport"),
    "redis": ("noa.queues.redis_streams", "RedisStreamsTransport"),
}
STOP_S = 10.0  # how long a stopping bridge waits for its loops


def find(config: NoaConfig, name: str) -> QueueBridgeConfig:
    for cfg in config.queues:
        if cfg.name == name:
            return cfg
    raise KeyError(f"no queue bridge named {name!r} in queues:")


def endpoints(cfg: QueueBridgeConfig, consumer: str, environ: Environ | None = None) -> Endpoints:
    url = cfg.url(environ)
    if url is None and cfg.kind != "sqs":
        raise ValueError(f"queue bridge {cfg.name}: ${cfg.url_env} (the broker URL) is not set")
    return Endpoints(
        url=url,
        source=cfg.source,
        group=cfg.group,
        prefetch=cfg.concurrency,
        declare=cfg.declare,
        reply_to=cfg.reply_to,
        dead_letter=cfg.dead_letter,
        consumer=consumer,
        options=cfg.options_map(),
    )


def transport_factory(kind: str, where: Endpoints) -> Callable[[], Transport]:
    """A maker of fresh transports of ``kind`` (each connection a new one)."""
    module, name = TRANSPORTS[kind]
    cls = getattr(importlib.import_module(module), name)

    def make() -> Transport:
        made: Transport = cls(where)
        return made

    return make


def known_models(registry: ModelRegistry) -> Callable[[str], bool]:
    """Whether NOA serves a model of that name (for any operation: an operation it cannot
    serve is the job's own 400)."""

    def known(name: str) -> bool:
        try:
            registry.resolve(name, "chat")
        except ModelNotFoundError:
            return False
        except NoaError:
            return True
        return True

    return known


@dataclass
class BridgeParts:
    """One bridge replica (see the module docstring)."""

    config: QueueBridgeConfig
    db: Database
    worker: BridgeWorker
    metrics: Metrics
    push: MetricsPush | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self.worker.run(self._stop), name="noa-bridge")
            if self.push is not None:
                self.push.start()

    def check(self) -> None:
        """Raise when the worker stopped although nobody stopped it."""
        task = self._task
        if task is not None and task.done():
            why = "cancelled" if task.cancelled() else repr(task.exception())
            raise RuntimeError(f"queue bridge {self.config.name} stopped: {why}")

    def status(self) -> dict[str, Any]:
        return self.worker.health.public()

    def lag(self) -> int | None:
        return self.worker.health.lag

    async def aclose(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, STOP_S)
            except (TimeoutError, asyncio.CancelledError):
                logger.warning("queue bridge %s: stopped before its loops ended", self.config.name)
            except Exception:
                logger.exception("queue bridge %s ended with an error", self.config.name)
        if self.push is not None:
            await self.push.aclose()
        await self.db.close()


def bridge(
    config: NoaConfig,
    name: str,
    replica: str = "inprocess",
    *,
    notify: Callable[[], None] = lambda: None,
    report: Report | None = None,
    environ: Environ | None = None,
    settings: WorkerSettings | None = None,
    db: Database | None = None,
    clock: Callable[[], float] = time.time,
) -> BridgeParts:
    """The bridge ``name`` of ``config`` for replica ``replica``; ``notify`` wakes a job runner
    (a job was stored), ``report`` hands in this replica's metrics and health (the app's
    HealthActor). ``db``: a database to use instead of the configured one (tests)."""
    cfg = find(config, name)
    database = db if db is not None else access_build.database(config, environ)
    metrics = Metrics()
    store = JobStore(database, clock, on_final=JobMetrics(metrics).finished)
    consumer = f"{replica}-{uuid.uuid4().hex[:6]}"  # a restarted replica is another consumer
    bridge_core = Bridge(
        BridgeSettings(
            name=cfg.name,
            key_id=cfg.key_id or MASTER_KEY_ID,
            default_priority=Priority.of(cfg.default_priority),
            default_model=cfg.default_model,
            reply_to=cfg.reply_to,
            dead_letter=cfg.dead_letter,
            max_bytes=cfg.max_message_bytes,
            max_attempts=cfg.max_attempts,
        ),
        store,
        known_model=known_models(routing.registry(config, environ)),
        notify=notify,
    )
    where = endpoints(cfg, consumer, environ)
    batch = max(64, cfg.concurrency)  # answers owed claimed as many at a time as it may hold
    worker = BridgeWorker(
        bridge_core,
        transport_factory(cfg.kind, where),
        ReplyOutbox(database, cfg.name, clock),
        settings
        or WorkerSettings(
            cfg.concurrency,
            cfg.max_queue_depth,
            reply_batch=batch,
            reply_window=4 * batch,  # a few such batches on their way to the broker at once
        ),
        owner=consumer,
        kind=cfg.kind,
        metrics=metrics,
        clock=clock,
    )
    push = None
    if report is not None:
        sender = report

        async def hand_in(snapshot: Snapshot) -> None:
            await sender(f"bridge:{cfg.name}:{replica}", snapshot, worker.health.public())

        push = MetricsPush(metrics, hand_in)
    return BridgeParts(cfg, database, worker, metrics, push)
