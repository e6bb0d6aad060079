"""The durable webhook outbox on both databases, against a real receiver on loopback: a job
that becomes final writes its delivery in the same transaction, a sweep sends it (verified by
``standardwebhooks`` and the ``openai`` SDK), retries on the injected clock, fails for good on
a 4xx or a refused target, and a sweep killed mid-delivery leaves the row to another sweeper
once its lease runs out. No test sleeps: the outbox's and the store's clock is a fake."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field
from typing import Any

import openai
import orjson
import pytest
from scripted_http import Server
from standardwebhooks.webhooks import Webhook

from noa.jobs.job_metrics import JobMetrics
from noa.jobs.model import JobSpec, JobStatus, Priority
from noa.jobs.store import JobStore
from noa.jobs.webhook_outbox import LEASE_LOST, WebhookOutbox
from noa.jobs.webhook_signing import WebhookSecret
from noa.jobs.webhooks import WebhookSender
from noa.observability.metrics import Metrics, render
from noa.storage.db import Database

T0 = 1_763_856_000.0
LOOPBACK = ["127.0.0.0/8"]
RESULT = {"id": "chatcmpl-1", "object": "chat.completion", "choices": []}


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


class Half(random.Random):
    """Jitter drawn at the middle: 30 % * 0.5 = +15 %."""

    def random(self) -> float:
        return 0.5


@dataclass
class Got:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each request with the next scripted status (the last repeats); ``hang`` holds
    the first request unanswered (until the client hangs up) after setting ``arrived``."""

    statuses: list[int]
    hang: bool = False
    url: str = ""
    received: list[Got] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(
        self, request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        head, _, body = request.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.received.append(Got(headers, body))
        self.arrived.set()
        if self.hang and len(self.received) == 1:
            await reader.read()  # until the sender is gone
            return False
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\n{{}}".encode())
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        return False


@pytest.fixture
def secret() -> WebhookSecret:
    return WebhookSecret.generate()


async def receiver(servers: list[Server], *statuses: int, hang: bool = False) -> Receiver:
    scripted = Receiver(list(statuses), hang=hang)
    server = await Server(scripted.handle).start()
    servers.append(server)
    scripted.url = f"http://127.0.0.1:{server.port}/hooks"
    return scripted


def outbox(
    db: Database, secret: WebhookSecret, clock: Clock, *, allow: list[str] = LOOPBACK, **kw: Any
) -> WebhookOutbox:
    sender = WebhookSender([secret], allow=allow, timeout_s=5.0)
    options: dict[str, Any] = {"clock": clock, "rng": Half(), "lease_s": 30.0}
    return WebhookOutbox(db, sender, **(options | kw))


async def finished_job(store: JobStore, url: str | None, **fields: Any) -> str:
    spec = JobSpec(endpoint="/v1/chat/completions", body={"model": "m"}, callback_url=url, **fields)
    job, _ = await store.submit(spec)
    [claim] = await store.claim("runner", lease_s=60)
    assert await store.complete(job.id, claim.token, RESULT)
    return job.id


async def test_a_completed_job_is_delivered_and_verifies(
    db: Database, servers: list[Server], secret: WebhookSecret
) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    hook = await receiver(servers, 200)
    job_id = await finished_job(store, hook.url)
    box = outbox(db, secret, clock)
    [pending] = await box.deliveries("job", job_id)
    assert pending["status"] == "pending" and pending["event_type"] == "job.completed"
    assert pending["attempts"] == [] and pending["next_at"] == T0
    assert pending["id"].startswith("evt_") and len(pending["id"]) == 28
    assert await box.next_due() == T0

    assert await box.sweep("sweeper") == 1
    [got] = hook.received
    event = Webhook(str(secret)).verify(got.body, got.headers)
    assert event["id"] == pending["id"] == got.headers["webhook-id"]
    assert event["object"] == "event" and event["type"] == "job.completed"
    assert event["created_at"] == int(T0)
    assert event["data"]["id"] == job_id and event["data"]["status"] == "completed"
    assert event["data"]["result"] == RESULT
    unwrapped = openai.OpenAI(api_key="x", webhook_secret=str(secret)).webhooks.unwrap(
        got.body, got.headers
    )
    assert unwrapped.type == "job.completed"
    [done] = await box.deliveries("job", job_id)
    assert done["status"] == "delivered" and done["delivered_at"] == T0
    assert done["next_at"] is None
    assert [(a["number"], a["status_code"], a["error"]) for a in done["attempts"]] == [
        (1, 200, None)
    ]
    assert await box.next_due() is None
    clock.tick(3600)
    assert await box.sweep("sweeper") == 0 and len(hook.received) == 1


async def test_the_delivery_is_written_in_the_settling_transaction(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    job, _ = await store.submit(
        JobSpec(endpoint="/v1/embeddings", body={"model": "m"}, callback_url="http://x.test/")
    )
    [claim] = await store.claim("runner", lease_s=60)
    await db.execute("ALTER TABLE noa_webhook_deliveries RENAME TO noa_webhook_gone")
    with pytest.raises(Exception):  # noqa: B017 - the driver's own error type
        await store.complete(job.id, claim.token, RESULT)
    await db.execute("ALTER TABLE noa_webhook_gone RENAME TO noa_webhook_deliveries")
    still = await store.get(job.id)
    assert still is not None and still.status is JobStatus.RUNNING  # the settle rolled back
    assert await store.complete(job.id, claim.token, RESULT)
    box = WebhookOutbox(db, WebhookSender([WebhookSecret.generate()]), clock=clock)
    assert [d["event_type"] for d in await box.deliveries("job", job.id)] == ["job.completed"]
    assert not await store.complete(job.id, claim.token, RESULT)  # settled already
    assert len(await box.deliveries("job", job.id)) == 1


async def test_a_500_is_retried_on_the_clock_then_delivered(
    db: Database, servers: list[Server], secret: WebhookSecret
) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    hook = await receiver(servers, 500, 200)
    job_id = await finished_job(store, hook.url)
    metrics = Metrics()
    box = outbox(db, secret, clock, backoff_base_s=2.0, metrics=JobMetrics(metrics))
    assert await box.sweep("sweeper") == 1
    [retrying] = await box.deliveries("job", job_id)
    assert retrying["status"] == "pending" and retrying["next_at"] == pytest.approx(T0 + 2.3)
    assert retrying["last_error"] == "the receiver answered 500"
    assert await box.next_due() == pytest.approx(T0 + 2.3)
    clock.tick(2.0)
    assert await box.sweep("sweeper") == 0  # not due yet
    clock.tick(0.5)
    assert await box.sweep("sweeper") == 1
    [done] = await box.deliveries("job", job_id)
    assert done["status"] == "delivered" and done["delivered_at"] == T0 + 2.5
    assert [(a["number"], a["at"], a["status_code"], a["error"]) for a in done["attempts"]] == [
        (1, T0, 500, "the receiver answered 500"),
        (2, T0 + 2.5, 200, None),
    ]
    assert {r.headers["webhook-id"] for r in hook.received} == {done["id"]}
    assert hook.received[0].body == hook.received[1].body  # the stored payload, byte for byte
    for got in hook.received:
        Webhook(str(secret)).verify(got.body, got.headers)
    text = render(metrics.snapshot()).decode()
    assert 'noa_webhook_deliveries_total{kind="job",outcome="retried"} 1.0' in text
    assert 'noa_webhook_deliveries_total{kind="job",outcome="delivered"} 1.0' in text


async def test_attempts_stop_at_max_attempts(
    db: Database, servers: list[Server], secret: WebhookSecret
) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    hook = await receiver(servers, 503)
    job_id = await finished_job(store, hook.url)
    box = outbox(db, secret, clock, max_attempts=3)
    for _ in range(3):
        assert await box.sweep("sweeper") == 1
        clock.tick(600)
    assert await box.sweep("sweeper") == 0
    [failed] = await box.deliveries("job", job_id)
    assert failed["status"] == "failed" and [a["status_code"] for a in failed["attempts"]] == [
        503,
        503,
        503,
    ]
    assert len(hook.received) == 3


async def test_a_400_fails_at_once(
    db: Database, servers: list[Server], secret: WebhookSecret
) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    hook = await receiver(servers, 400, 200)
    job_id = await finished_job(store, hook.url)
    metrics = Metrics()
    box = outbox(db, secret, clock, metrics=JobMetrics(metrics))
    assert await box.sweep("sweeper") == 1
    clock.tick(3600)
    assert await box.sweep("sweeper") == 0
    [failed] = await box.deliveries("job", job_id)
    assert failed["status"] == "failed" and failed["last_error"] == "the receiver answered 400"
    assert [a["status_code"] for a in failed["attempts"]] == [400] and len(hook.received) == 1
    assert await box.next_due() is None
    text = render(metrics.snapshot()).decode()
    assert 'noa_webhook_deliveries_total{kind="job",outcome="failed"} 1.0' in text


async def test_a_loopback_target_not_allowlisted_fails_with_the_reason(
    db: Database, servers: list[Server], secret: WebhookSecret
) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    hook = await receiver(servers, 200)
    job_id = await finished_job(store, hook.url)
    box = outbox(db, secret, clock, allow=[])
    assert await box.sweep("sweeper") == 1
    [failed] = await box.deliveries("job", job_id)
    assert failed["status"] == "failed" and "loopback" in failed["last_error"]
    [attempt] = failed["attempts"]
    assert attempt["status_code"] is None and "loopback" in attempt["error"]
    assert hook.received == []


async def test_a_sweep_killed_mid_delivery_is_finished_by_another(
    db: Database, other: Database, servers: list[Server], secret: WebhookSecret
) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    hook = await receiver(servers, 200, hang=True)
    job_id = await finished_job(store, hook.url)
    first, second = outbox(db, secret, clock), outbox(other, secret, clock)
    killed = asyncio.create_task(first.sweep("a"))
    await asyncio.wait_for(hook.arrived.wait(), 10)
    killed.cancel()  # the process dies mid-delivery: nothing more is written
    with contextlib.suppress(asyncio.CancelledError):
        await killed
    [held] = await second.deliveries("job", job_id)
    assert held["status"] == "pending" and held["next_at"] == T0 + 30  # the lease's expiry
    assert await second.sweep("b") == 0  # still leased
    clock.tick(31)
    assert await second.sweep("b") == 1
    [done] = await second.deliveries("job", job_id)
    assert done["status"] == "delivered"
    assert [(a["number"], a["status_code"], a["error"]) for a in done["attempts"]] == [
        (1, None, LEASE_LOST),
        (2, 200, None),
    ]
    assert [r.headers["webhook-id"] for r in hook.received] == [done["id"]] * 2


async def test_a_lease_lost_on_the_last_attempt_fails_the_delivery(
    db: Database, servers: list[Server], secret: WebhookSecret
) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    hook = await receiver(servers, 200, hang=True)
    job_id = await finished_job(store, hook.url)
    box = outbox(db, secret, clock, max_attempts=1)
    killed = asyncio.create_task(box.sweep("a"))
    await asyncio.wait_for(hook.arrived.wait(), 10)
    killed.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await killed
    clock.tick(31)
    assert await box.sweep("b") == 0
    [failed] = await box.deliveries("job", job_id)
    assert failed["status"] == "failed" and failed["last_error"] == LEASE_LOST


async def test_a_stale_token_settles_nothing_and_enqueues_nothing(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    job, _ = await store.submit(
        JobSpec(endpoint="/v1/embeddings", body={"model": "m"}, callback_url="http://x.test/")
    )
    [old] = await store.claim("a", lease_s=10)
    clock.tick(11)
    [new] = await store.claim("b", lease_s=10)
    assert new.token == old.token + 1
    assert not await store.complete(job.id, old.token, RESULT)
    box = WebhookOutbox(db, WebhookSender([WebhookSecret.generate()]), clock=clock)
    assert await box.deliveries("job", job.id) == []
    assert await store.fail(job.id, new.token, "bad request")
    [failed] = await box.deliveries("job", job.id)
    assert failed["event_type"] == "job.failed"
    row = await db.fetchrow(
        "SELECT version, payload FROM noa_webhook_deliveries WHERE id = $1", failed["id"]
    )
    assert row is not None and row["version"] == new.token
    assert orjson.loads(row["payload"])["data"]["error"]["message"] == "bad request"


async def test_cancel_enqueues_job_cancelled(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    box = WebhookOutbox(db, WebhookSender([WebhookSecret.generate()]), clock=clock)
    job, _ = await store.submit(
        JobSpec(endpoint="/v1/embeddings", body={"model": "m"}, callback_url="http://x.test/")
    )
    quiet, _ = await store.submit(JobSpec(endpoint="/v1/embeddings", body={"model": "m"}))
    assert (await store.cancel(job.id)).status is JobStatus.CANCELLED  # type: ignore[union-attr]
    await store.cancel(quiet.id)
    await store.cancel(job.id)  # already final: nothing more
    [cancelled] = await box.deliveries("job", job.id)
    assert cancelled["event_type"] == "job.cancelled"
    assert await box.deliveries("job", quiet.id) == []
    count = await db.fetchrow("SELECT count(*) AS n FROM noa_webhook_deliveries")
    assert count is not None and count["n"] == 1


async def test_redrive_and_finish_again_makes_a_second_event(db: Database) -> None:
    clock = Clock()
    store = JobStore(db, clock)
    box = WebhookOutbox(db, WebhookSender([WebhookSecret.generate()]), clock=clock)
    job, _ = await store.submit(
        JobSpec(
            endpoint="/v1/embeddings",
            body={"model": "m"},
            callback_url="http://x.test/",
            max_attempts=1,
        )
    )
    await store.claim("a", lease_s=10)
    clock.tick(11)
    assert await store.claim("b", lease_s=10) == []  # the lost lease was its last attempt
    dead = await store.get(job.id)
    assert dead is not None and dead.status is JobStatus.DEAD
    await store.redrive(job.id)
    [claim] = await store.claim("b", lease_s=10)
    assert await store.complete(job.id, claim.token, RESULT)
    events = await box.deliveries("job", job.id)
    assert [e["event_type"] for e in events] == ["job.dead", "job.completed"]
    assert events[0]["id"] != events[1]["id"]
    await store.redrive(job.id)  # a completed job is not redriven: nothing new
    assert len(await box.deliveries("job", job.id)) == 2


async def test_queue_depths_feed_the_gauge(db: Database) -> None:
    store = JobStore(db, Clock())
    for priority in (Priority.HIGH, Priority.HIGH, Priority.LOW):
        await store.submit(JobSpec(endpoint="/v1/embeddings", body={}, priority=priority))
    await store.submit(JobSpec(endpoint="/v1/embeddings", body={}, parent_id="batch_1"))
    depths = await store.queue_depths()
    assert depths == {"high": 2, "medium": 0, "low": 1, "batch": 1}
    metrics = Metrics()
    JobMetrics(metrics).depth(depths)
    text = render(metrics.snapshot()).decode()
    assert 'noa_queue_depth{queue="high"} 2.0' in text
    assert 'noa_queue_depth{queue="medium"} 0.0' in text
    assert 'noa_queue_depth{queue="batch"} 1.0' in text
