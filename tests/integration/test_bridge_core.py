"""The bridge core over the real job store (SQLite and PostgreSQL), with a transport that
records what the bridge asks of the broker (the brokers themselves are tested with their
transports): a message becomes one job and is acknowledged only after it is stored; a
redelivered message finds its job (no second one); poison goes to the dead letters with its
reason; a store that fails leaves the message unacknowledged, to be delivered again."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from noa.jobs.model import JobStatus, Priority
from noa.jobs.store import JobStore
from noa.queues.bridge import Bridge, BridgeSettings
from noa.queues.transport import Delivery
from noa.storage.db import Database

CHAT = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}


class Recording:
    """What the bridge asked of the broker, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def ack(self, delivery: Delivery) -> None:
        self.calls.append(("ack", delivery.broker_id))

    async def publish(
        self, destination: str, body: bytes, *, message_id: str, correlation_id: str | None
    ) -> None:
        assert destination == "dead-letters"
        self.calls.append(("dead", orjson.loads(body)))


def message(broker_id: str, **envelope: Any) -> Delivery:
    return Delivery(broker_id, orjson.dumps({"body": CHAT} | envelope))


class Bound:
    """A bridge and the transport it takes from."""

    def __init__(self, core: Bridge, transport: Recording) -> None:
        self.core, self.transport = core, transport

    async def take(self, delivery: Delivery) -> Any:
        return await self.core.take(self.transport, delivery)


def bridge(db: Database, transport: Recording, **settings: Any) -> tuple[Bound, list[int]]:
    woken: list[int] = []
    made = Bridge(
        BridgeSettings(name="orders", dead_letter="dead-letters", **settings),
        JobStore(db),
        known_model=lambda m: m in {"gpt", "smollm2"},
        notify=lambda: woken.append(1),
    )
    return Bound(made, transport), woken


async def test_a_message_becomes_one_job_then_is_acked(db: Database) -> None:
    transport = Recording()
    b, woken = bridge(db, transport, reply_to="results", default_priority=Priority.LOW)
    job = await b.take(message("m-1", metadata={"doc": 7}, correlation_id="c-1"))
    assert job is not None and job.status is JobStatus.QUEUED and job.priority is Priority.LOW
    assert job.metadata == {
        "doc": 7, "noa_bridge": "orders", "noa_message_id": "m-1", "noa_reply_to": "results",
        "noa_correlation_id": "c-1",
    }  # fmt: skip
    assert transport.calls == [("ack", "m-1")] and woken == [1]
    again = await b.take(message("m-1", metadata={"doc": 7}, correlation_id="c-1"))
    assert again is not None and again.id == job.id  # a redelivery: the same job
    assert transport.calls == [("ack", "m-1"), ("ack", "m-1")] and woken == [1]
    assert (await JobStore(db).depth())["queued"] == 1


async def test_the_envelope_id_names_the_message_across_broker_ids(db: Database) -> None:
    b, _ = bridge(db, Recording())
    first = await b.take(message("broker-1", id="doc-42", reply_to="mine"))
    second = await b.take(message("broker-2", id="doc-42", reply_to="mine"))
    assert first is not None and second is not None and first.id == second.id
    assert first.metadata["noa_reply_to"] == "mine"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{oops", "bad_json"),
        (orjson.dumps({"body": {**CHAT, "model": "nope"}}), "unknown_model"),
        (orjson.dumps({"body": CHAT, "metadata": {"noa_bridge": "x"}}), "bad_envelope"),
        (orjson.dumps({"body": {"model": "gpt"}}), "invalid_value"),
    ],
)
async def test_poison_goes_to_the_dead_letters_with_its_reason(
    db: Database, raw: bytes, code: str
) -> None:
    transport = Recording()
    b, woken = bridge(db, transport)
    assert await b.take(Delivery("m-9", raw)) is None
    (what, dead), acked = transport.calls
    assert what == "dead" and dead["reason"]["code"] == code and acked == ("ack", "m-9")
    assert dead["id"] == "m-9"  # the broker's id (the envelope has none)
    assert dead["original"] == raw.decode("utf-8", errors="replace")
    assert woken == [] and sum((await JobStore(db).depth()).values()) == 0


async def test_too_large_goes_to_the_dead_letters(db: Database) -> None:
    transport = Recording()
    b, _ = bridge(db, transport, max_bytes=64)
    assert await b.take(message("m-1", metadata={"pad": "x" * 100})) is None
    assert transport.calls[0][1]["reason"]["code"] == "too_large"


async def test_the_default_model_fills_a_body_without_one(db: Database) -> None:
    b, _ = bridge(db, Recording(), default_model="smollm2")
    job = await b.take(Delivery("m-1", orjson.dumps({"body": {"messages": CHAT["messages"]}})))
    assert job is not None and job.body["model"] == "smollm2"


async def test_a_store_that_fails_leaves_the_message_unacknowledged(db: Database) -> None:
    transport = Recording()
    b, _ = bridge(db, transport)
    await db.close()  # the database is away
    with pytest.raises(Exception):  # noqa: B017  # whatever the driver raises
        await b.take(message("m-1"))
    assert transport.calls == []  # not acked: the broker delivers it again
