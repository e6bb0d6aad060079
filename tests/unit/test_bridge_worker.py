"""The bridge worker's own behaviour, over a broker in memory and a SQLite job store: it
reconnects when the broker is away, keeps a message unacknowledged while its job cannot be
stored, stops pulling while its model's queue is full, retries a result a destination refuses
without dropping the connection, and publishes what it owes once the broker is back. (The
four real brokers: tests/integration/test_bridges.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from noa.jobs.model import JobSpec
from noa.jobs.replies import ReplyOutbox
from noa.jobs.store import JobStore
from noa.queues.bridge import Bridge, BridgeSettings
from noa.queues.transport import Delivery, UndeliverableError
from noa.queues.worker import BridgeWorker, WorkerSettings
from noa.storage.db import Database, connect
from noa.storage.migrations import migrate

FAST = WorkerSettings(
    concurrency=8, receive_wait_s=0.01, depth_check_s=0.01, reconnect_base_s=0.01,
    reconnect_cap_s=0.02, poll_max_s=0.02, lag_every_s=0.01,
)  # fmt: skip


class Broker:
    """Queues of bytes; ``down`` makes every call fail; a closed connection's unacknowledged
    messages go back to the front of their queue."""

    def __init__(self) -> None:
        self.queues: dict[str, list[bytes]] = {}
        self.down = False
        self.missing: set[str] = set()
        self.connections = 0
        self.confirms: asyncio.Event | None = None  # when set: publishes wait for it ...
        self.publishing = 0  # ... and those waiting are counted

    def put(self, name: str, body: bytes) -> None:
        self.queues.setdefault(name, []).append(body)

    def got(self, name: str) -> list[dict[str, Any]]:
        return [orjson.loads(b) for b in self.queues.get(name, [])]


class Memory:
    kind = "memory"

    def __init__(self, broker: Broker, source: str = "in") -> None:
        self.broker, self.source = broker, source
        self.held: dict[int, bytes] = {}
        self.n = 0

    def _check(self) -> None:
        if self.broker.down:
            raise ConnectionError("the broker is away")

    async def connect(self) -> None:
        self._check()
        self.broker.connections += 1

    async def receive(self, max_messages: int, wait_s: float) -> list[Delivery]:
        self._check()
        queue = self.broker.queues.setdefault(self.source, [])
        out = []
        while queue and len(out) < max_messages:
            self.n += 1
            self.held[self.n] = queue.pop(0)
            out.append(Delivery(f"b-{self.n}", self.held[self.n], handle=self.n))
        if not out:
            await asyncio.sleep(min(wait_s, 0.01))
        return out

    async def ack(self, delivery: Delivery) -> None:
        self._check()
        self.held.pop(delivery.handle)

    async def publish(
        self, destination: str, body: bytes, *, message_id: str, correlation_id: str | None
    ) -> None:
        self._check()
        if destination in self.broker.missing:
            raise UndeliverableError(f"no queue {destination}")
        if self.broker.confirms is not None:
            self.broker.publishing += 1
            try:
                await self.broker.confirms.wait()
            finally:
                self.broker.publishing -= 1
        self.broker.put(destination, body)

    async def lag(self) -> int | None:
        self._check()
        return len(self.broker.queues.get(self.source, []))

    async def close(self) -> None:
        queue = self.broker.queues.setdefault(self.source, [])
        queue[:0] = list(self.held.values())
        self.held.clear()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await connect(f"sqlite:///{tmp_path}/noa.db")
    await migrate(database)
    yield database
    await database.close()


def message(i: int, **envelope: Any) -> bytes:
    body = {"model": "gpt", "messages": [{"role": "user", "content": f"m{i}"}]}
    return orjson.dumps({"id": f"m-{i}", "body": body, **envelope})


def worker(
    db: Database, broker: Broker, store: JobStore | None = None, **settings: Any
) -> BridgeWorker:
    store = store or JobStore(db)
    bridge = Bridge(BridgeSettings(name="orders", reply_to="out", dead_letter="dead"), store)
    chosen = WorkerSettings(**{**FAST.__dict__, **settings})
    return BridgeWorker(
        bridge, lambda: Memory(broker), ReplyOutbox(db, "orders"), chosen, owner="w", kind="memory"
    )


async def until(check: Callable[[], Awaitable[bool] | bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if await got if not isinstance(got, bool) else got:
            return
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.005)


async def jobs(db: Database) -> int:
    row = await db.fetchrow("SELECT count(*) AS n FROM noa_jobs")
    return 0 if row is None else int(row["n"])


async def complete_all(store: JobStore) -> None:
    for claim in await store.claim("runner", limit=100, lease_s=30):
        assert await store.complete(claim.job.id, claim.token, {"ok": claim.job.id})


async def running(w: BridgeWorker, body: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    try:
        await body(stop)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_it_waits_for_the_broker_then_answers(db: Database) -> None:
    broker, store = Broker(), JobStore(db)
    broker.down = True
    for i in range(3):
        broker.put("in", message(i))
    w = worker(db, broker, store)

    async def body(stop: asyncio.Event) -> None:
        await until(lambda: w.health.reconnects >= 3)
        assert await jobs(db) == 0 and not w.health.connected
        assert w.health.public()["status"] == "down" and "away" in str(w.health.last_error)
        broker.down = False
        await until(db_is(3))
        await complete_all(store)
        await until(lambda: len(broker.queues.get("out", [])) == 3)
        assert w.health.public()["status"] == "up"

    def db_is(n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return await jobs(db) == n

        return check

    await running(w, body)
    assert sorted(m["id"] for m in broker.got("out")) == ["m-0", "m-1", "m-2"]


async def test_a_message_stays_held_while_its_job_cannot_be_stored(db: Database) -> None:
    broker = Broker()
    broker.put("in", message(1))
    failures = [3]

    class Flaky(JobStore):
        async def submit_many(self, specs: list[JobSpec], tx: Any = None) -> Any:
            if failures[0]:
                failures[0] -= 1
                raise OSError("the database is away")
            return await super().submit_many(specs, tx)

    w = worker(db, broker, Flaky(db))
    transports: list[Memory] = []
    made = w.connect
    w.connect = lambda: transports.append(made()) or transports[-1]  # type: ignore[assignment,func-returns-value]

    async def body(stop: asyncio.Event) -> None:
        await until(lambda: bool(transports) and len(transports[-1].held) == 1)
        await until(lambda: failures[0] == 0)
        await until(lambda: not transports[-1].held)  # acknowledged once stored, not before

    await running(w, body)
    assert await jobs(db) == 1 and w.health.reconnects == 0


async def test_pulling_stops_while_the_models_queue_is_full(db: Database) -> None:
    broker, store = Broker(), JobStore(db)
    for i in range(6):
        broker.put("in", message(i))
    w = worker(db, broker, store, max_queue_depth=2)

    async def body(stop: asyncio.Event) -> None:
        await until(lambda: w.health.waiting_for_room == 4)
        assert await jobs(db) == 2 and w.health.public()["status"] == "paused"
        await complete_all(store)  # the queue drains: the waiting ones go in, two at a time
        for n in (4, 6):

            async def stored(n: int = n) -> bool:
                return await jobs(db) == n

            await until(stored)
            assert await store.model_queued("gpt", 100) <= 2
            await complete_all(store)
        await until(lambda: w.health.waiting_for_room == 0)

    await running(w, body)


async def test_a_refused_destination_is_retried_without_reconnecting(db: Database) -> None:
    broker, store = Broker(), JobStore(db)
    broker.missing.add("elsewhere")
    broker.put("in", message(1, reply_to="elsewhere"))
    broker.put("in", message(2))
    w = worker(db, broker, store)

    async def body(stop: asyncio.Event) -> None:
        async def two() -> bool:
            return await jobs(db) == 2

        await until(two)
        await complete_all(store)
        await until(lambda: len(broker.queues.get("out", [])) == 1)
        outbox = ReplyOutbox(db, "orders")

        async def refused() -> bool:  # m-2's row deleted, m-1's due again later
            row = await db.fetchrow("SELECT last_error FROM noa_bridge_replies")
            return await outbox.pending() == 1 and row is not None and bool(row["last_error"])

        await until(refused)
        broker.missing.clear()
        row = await db.fetchrow("SELECT last_error FROM noa_bridge_replies")
        assert row is not None and "no queue elsewhere" in row["last_error"]
        await db.execute("UPDATE noa_bridge_replies SET next_at = 0")
        await until(lambda: len(broker.queues.get("elsewhere", [])) == 1)

    await running(w, body)
    assert w.health.reconnects == 0 and broker.connections == 1
    assert [m["id"] for m in broker.got("out")] == ["m-2"]


async def test_later_answers_are_claimed_while_earlier_ones_await_the_broker(
    db: Database,
) -> None:
    broker, store = Broker(), JobStore(db)
    broker.confirms = asyncio.Event()
    for i in range(7):
        broker.put("in", message(i))
    w = worker(db, broker, store, reply_batch=2, reply_window=5)

    async def body(stop: asyncio.Event) -> None:
        async def seven() -> bool:
            return await jobs(db) == 7

        await until(seven)
        await complete_all(store)
        # three batches of two claimed, the third cut to one: five on their way, none confirmed
        await until(lambda: broker.publishing == 5)
        for _ in range(5):  # several polls of the outbox: no sixth while the window is full
            await asyncio.sleep(FAST.poll_max_s)
            assert broker.publishing == 5 and "out" not in broker.queues
        assert await ReplyOutbox(db, "orders").pending() == 7
        assert broker.confirms is not None
        broker.confirms.set()
        await until(lambda: len(broker.queues.get("out", [])) == 7)

    await running(w, body)
    assert sorted(m["id"] for m in broker.got("out")) == [f"m-{i}" for i in range(7)]
    assert await ReplyOutbox(db, "orders").pending() == 0


async def test_answers_owed_while_the_broker_was_away_go_out_when_it_is_back(
    db: Database,
) -> None:
    broker, store = Broker(), JobStore(db)
    broker.put("in", message(1))
    w = worker(db, broker, store)

    async def body(stop: asyncio.Event) -> None:
        async def one() -> bool:
            return await jobs(db) == 1

        await until(one)
        broker.down = True
        await until(lambda: not w.health.connected)
        await complete_all(store)  # the job ends while the broker is away
        await asyncio.sleep(0.05)
        assert "out" not in broker.queues
        broker.down = False
        await until(lambda: len(broker.queues.get("out", [])) == 1)

    await running(w, body)
    (answer,) = broker.got("out")
    assert answer["id"] == "m-1" and answer["status"] == "completed"
