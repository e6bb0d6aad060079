"""A queue bridge over a real broker and the suite's PostgreSQL, with a job runner whose
executor answers at once (the bridge, the store and the broker are what is tested; the
service that runs jobs has tests of its own): a request whose first message says ``die``
fails on every attempt, so its job dies after its retries; any other is answered with
``{"echo": <the message's content>}``.

``Rig.start()`` runs the bridge's worker (and the runner, unless ``runner=False``);
``Rig.stop()`` stops them. ``CHILD`` runs a worker alone in another process, to be killed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from brokers import BrokerProbe

from noa.jobs.model import Job
from noa.jobs.replies import ReplyOutbox
from noa.jobs.runner import JobRunner
from noa.jobs.store import JobStore
from noa.queues.bridge import Bridge, BridgeSettings
from noa.queues.worker import BridgeWorker, WorkerSettings
from noa.storage.db import Database

SETTINGS = WorkerSettings(
    concurrency=32, receive_wait_s=0.2, reconnect_base_s=0.1, reconnect_cap_s=1.0,
    reply_lease_s=10.0, poll_max_s=0.1, lag_every_s=0.5,
)  # fmt: skip


def request(message_id: str | None, content: str, **envelope: Any) -> bytes:
    body = {"model": "gpt", "messages": [{"role": "user", "content": content}]}
    fields: dict[str, Any] = {"body": body, **envelope}
    if message_id is not None:
        fields["id"] = message_id
    return orjson.dumps(fields)


async def answer(job: Job) -> dict[str, Any]:
    content = job.body["messages"][0]["content"]
    if content == "die":
        raise RuntimeError("this request always fails")
    return {"echo": content}


@dataclass
class Rig:
    db: Database
    probe: BrokerProbe
    source: str
    reply_to: str
    dead_letter: str
    consumer: str = "noa-1"
    settings: WorkerSettings = SETTINGS
    execute: Callable[[Job], Awaitable[dict[str, Any]]] = answer
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    worker: BridgeWorker | None = None
    runner: JobRunner | None = None

    def make_worker(self) -> BridgeWorker:
        store = JobStore(self.db)
        endpoints = self.probe.endpoints(
            self.source, self.reply_to, self.dead_letter, self.consumer
        )
        bridge = Bridge(
            BridgeSettings(
                name="orders",
                reply_to=self.reply_to,
                dead_letter=self.dead_letter,
                max_bytes=4096,
                max_attempts=2,
            ),
            store,
            known_model=lambda m: m == "gpt",
            notify=lambda: self.runner.notify() if self.runner is not None else None,
        )
        return BridgeWorker(
            bridge,
            lambda: self.probe.transport(endpoints),
            ReplyOutbox(self.db, "orders"),
            self.settings,
            owner=self.consumer,
            kind=self.probe.kind,
        )

    def start(self, *, runner: bool = True) -> None:
        self.stop_event.clear()
        self.worker = self.make_worker()
        self.tasks.append(asyncio.create_task(self.worker.run(self.stop_event)))
        if runner:
            self.start_runner()

    def start_runner(self) -> None:
        self.runner = JobRunner(
            JobStore(self.db), self.execute, owner=f"runner-{self.consumer}", concurrency=32,
            base_backoff_s=0.01, cap_backoff_s=0.05, poll_s=0.05,
        )  # fmt: skip
        self.tasks.append(asyncio.create_task(self.runner.run(self.stop_event)))

    async def stop(self) -> None:
        self.stop_event.set()
        for task in self.tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 15)
        self.tasks.clear()

    async def jobs(self) -> int:
        row = await self.db.fetchrow("SELECT count(*) AS n FROM noa_jobs")
        return 0 if row is None else int(row["n"])


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def by_id(messages: list[bytes]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for raw in messages:
        message = orjson.loads(raw)
        out.setdefault(str(message["id"]), []).append(message)
    return out


# The child: a bridge worker alone (no runner) on the parent's schema and broker, killed by
# the parent while it takes messages.
CHILD = r"""
import asyncio, sys
sys.path.insert(0, "tests/support")

async def main(kind, url, schema, source, reply_to, dead_letter) -> None:
    import asyncpg
    import brokers
    from bridge_rig import Rig
    from noa.storage.db import PostgresDatabase

    pool = await asyncpg.create_pool(
        url, min_size=1, max_size=4, server_settings={"search_path": schema}
    )
    rig = Rig(PostgresDatabase(pool), brokers.probe(kind), source, reply_to, dead_letter,
              consumer="doomed")
    rig.start(runner=False)
    print("started", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:7]))
"""
