"""The Kafka transport (``noa.queues.kafka``) against a real broker (tansu): receive and
commit, redelivery of what was not acknowledged, the contiguous-prefix commits (out of order,
per partition), the in-flight bound, publish with ids, lag, a rebalance, and a broker restart
(tansu on S3 storage: topics, records and committed offsets survive it)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from broker_kafka import Probe, private
from brokers import probe, unique

from noa.queues.kafka import KafkaHandle, KafkaTransport
from noa.queues.transport import Delivery, Endpoints


@pytest.fixture
async def kafka() -> AsyncIterator[Probe]:
    made = probe("kafka")
    assert isinstance(made, Probe)
    yield made
    await made.close()


@pytest.fixture
async def opened() -> AsyncIterator[list[KafkaTransport]]:
    """Transports a test opens (``connect`` through ``open_``); closed after it."""
    transports: list[KafkaTransport] = []
    yield transports
    for transport in transports:
        await transport.close()


async def open_(opened: list[KafkaTransport], endpoints: Endpoints) -> KafkaTransport:
    transport = KafkaTransport(endpoints)
    opened.append(transport)
    await transport.connect()
    return transport


async def collect(transport: KafkaTransport, n: int, timeout_s: float = 30) -> list[Delivery]:
    """Receive until ``n`` messages came (or the deadline passed: the caller's assert fails)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        got += await transport.receive(n - len(got), 0.5)
    return got


async def topics(kafka: Probe, partitions: int = 1) -> Endpoints:
    source, reply, dead = unique("in"), unique("out"), unique("dead")
    await kafka.create(source, partitions=partitions)
    return kafka.endpoints(source, reply, dead)


def offsets(deliveries: list[Delivery]) -> list[tuple[int, int]]:
    handles = [d.handle for d in deliveries]
    assert all(isinstance(h, KafkaHandle) for h in handles)
    return [(h.partition.partition, h.offset) for h in handles]


async def test_acked_messages_are_not_delivered_again(
    kafka: Probe, opened: list[KafkaTransport]
) -> None:
    e = await topics(kafka)
    first = await open_(opened, e)
    await kafka.send(e.source, b"one", "m-1", correlation_id="c-1", reply_to="answers")
    await kafka.send(e.source, b"two")
    got = await collect(first, 2)
    assert [d.body for d in got] == [b"one", b"two"]
    assert got[0].broker_id == "m-1" and got[0].correlation_id == "c-1"
    assert got[0].reply_to == "answers" and got[0].headers["message_id"] == "m-1"
    assert got[1].broker_id == f"{e.source}:0:1"  # no message_id header: topic:partition:offset
    for delivery in got:
        await first.ack(delivery)
    await first.close()
    await kafka.send(e.source, b"three", "m-3")
    second = await open_(opened, Endpoints(**{**e.__dict__, "consumer": "noa-2"}))
    again = await collect(second, 1)
    assert [d.body for d in again] == [b"three"]  # the group resumes after the acked two


async def test_unacknowledged_messages_are_delivered_again(
    kafka: Probe, opened: list[KafkaTransport]
) -> None:
    e = await topics(kafka)
    first = await open_(opened, e)
    await kafka.send(e.source, b"one", "m-1")
    await kafka.send(e.source, b"two")
    got = await collect(first, 2)
    assert len(got) == 2
    await first.close()  # nothing acknowledged: nothing committed
    await first.close()  # idempotent
    second = await open_(opened, e)
    again = await collect(second, 2)
    assert [(d.broker_id, d.body) for d in again] == [(d.broker_id, d.body) for d in got]
    assert [d.broker_id for d in again] == ["m-1", f"{e.source}:0:1"]


async def test_out_of_order_acks_commit_only_the_contiguous_prefix(
    kafka: Probe, opened: list[KafkaTransport]
) -> None:
    e = await topics(kafka)
    first = await open_(opened, e)
    for i in range(5):
        await kafka.send(e.source, f"m{i}".encode(), f"m-{i}")
    got = await collect(first, 5)
    assert offsets(got) == [(0, i) for i in range(5)]
    for i in (3, 0, 2):  # 1 and 4 stay unacknowledged
        await first.ack(got[i])
    await first.close()
    second = await open_(opened, e)
    again = await collect(second, 4)
    # committed up to 1 (the first unacked): exactly offsets 1.. come again, 2 and 3 too
    assert [d.body for d in again] == [b"m1", b"m2", b"m3", b"m4"]
    assert await second.receive(10, 1.0) == []


async def test_two_partitions_are_tracked_independently(
    kafka: Probe, opened: list[KafkaTransport]
) -> None:
    e = await topics(kafka, partitions=2)
    first = await open_(opened, e)
    for partition in (0, 1):
        for i in range(2):
            await kafka.send(e.source, f"p{partition}-{i}".encode(), partition=partition)
    got = await collect(first, 4)
    assert sorted(offsets(got)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    by = {(d.handle.partition.partition, d.handle.offset): d for d in got}
    await first.ack(by[(0, 1)])  # partition 0: offset 0 not acked, nothing commits there
    await first.ack(by[(1, 0)])
    await first.ack(by[(1, 1)])  # partition 1: everything acked, committed to 2
    await first.close()
    second = await open_(opened, e)
    again = await collect(second, 2)
    assert sorted(d.body for d in again) == [b"p0-0", b"p0-1"]
    assert await second.receive(10, 1.0) == []


async def test_publish_lands_with_its_ids(kafka: Probe, opened: list[KafkaTransport]) -> None:
    e = await topics(kafka)
    transport = await open_(opened, e)  # declare creates the reply topic
    await transport.publish(e.reply_to or "", b"answer", message_id="r-1", correlation_id="c-9")
    await transport.publish(e.reply_to or "", b"bare", message_id="r-2", correlation_id=None)
    records = await kafka.take(e.reply_to or "", 2, 20)
    assert [(r["body"], r["key"]) for r in records] == [(b"answer", b"r-1"), (b"bare", b"r-2")]
    assert records[0]["headers"] == {"message_id": "r-1", "correlation_id": "c-9"}
    assert records[1]["headers"] == {"message_id": "r-2"}


async def test_lag_counts_waiting_messages(kafka: Probe, opened: list[KafkaTransport]) -> None:
    e = await topics(kafka)
    transport = await open_(opened, e)
    for i in range(3):
        await kafka.send(e.source, f"m{i}".encode())
    assert await transport.lag() == 3
    got = await collect(transport, 3)
    await transport.ack(got[1])
    assert await transport.lag() == 3  # offset 0 not acknowledged: nothing committed yet
    await transport.ack(got[0])
    assert await transport.lag() == 1
    await transport.ack(got[2])
    assert await transport.lag() == 0


async def test_in_flight_bound_holds(kafka: Probe, opened: list[KafkaTransport]) -> None:
    e = await topics(kafka)
    transport = await open_(opened, Endpoints(**{**e.__dict__, "prefetch": 3}))
    for i in range(5):
        await kafka.send(e.source, f"m{i}".encode())
    got = await collect(transport, 3)
    assert len(got) == 3
    assert await transport.receive(10, 0.5) == []  # three held: none more
    await transport.ack(got[0])
    more = await collect(transport, 1)
    assert [d.body for d in more] == [b"m3"]
    assert await transport.receive(10, 0.5) == []
    for delivery in got[1:] + more:
        await transport.ack(delivery)
    rest = await collect(transport, 1)
    assert [d.body for d in rest] == [b"m4"]


async def test_revoked_partitions_go_to_the_new_member(
    kafka: Probe, opened: list[KafkaTransport]
) -> None:
    e = await topics(kafka, partitions=2)
    first = await open_(opened, e)
    for partition in (0, 1):
        await kafka.send(e.source, f"p{partition}".encode(), partition=partition)
    got = await collect(first, 2)
    assert sorted(offsets(got)) == [(0, 0), (1, 0)]
    second = await open_(opened, Endpoints(**{**e.__dict__, "consumer": "noa-2"}))
    # the second member joins: the group rebalances, one partition each; the first member's
    # unacknowledged message of the partition it lost goes to the second
    taken = await collect(second, 1, timeout_s=60)
    assert len(taken) == 1
    lost = taken[0].handle.partition
    stale = next(d for d in got if d.handle.partition == lost)
    assert taken[0].body == stale.body
    # aiokafka rebalances eagerly: the first member lost both partitions and got the other
    # one back, whose uncommitted message it receives again (a new handle)
    regained = await collect(first, 1)
    assert [d.handle.partition for d in regained] != [lost] and len(regained) == 1
    for old in got:
        await first.ack(old)  # handed out before the revocation: ignored, commits nothing
    assert await first.lag() == 2
    await first.ack(regained[0])
    assert await first.lag() == 1  # the regained one is committed, the lost one is not
    # what the group committed, read without joining it (tansu 0.6 never completes a join
    # after a group of two members emptied: a third member would wait forever)
    assert await kafka.committed(e.group, e.source) == {
        lost.partition: None,
        regained[0].handle.partition.partition: 1,
    }


async def test_broker_restart_raises_then_recovers_with_storage(
    tmp_path: Path, opened: list[KafkaTransport]
) -> None:
    broker = await private(tmp_path)
    try:
        source, reply = unique("in"), unique("out")
        e = broker.endpoints(source, reply, unique("dead"))
        first = await open_(opened, e)
        for i in range(3):
            await broker.send(source, f"m{i}".encode(), f"m-{i}")
        got = await collect(first, 3)
        assert [d.body for d in got] == [b"m0", b"m1", b"m2"]
        await first.ack(got[0])

        await broker.stop()
        with pytest.raises(Exception):  # noqa: B017 - any error: the worker reconnects
            await first.receive(10, 0.5)
        with pytest.raises(Exception):  # noqa: B017
            await first.ack(got[1])
        with pytest.raises(Exception):  # noqa: B017
            await first.publish(reply, b"x", message_id="r-0", correlation_id=None)
        await first.close()
        with pytest.raises(Exception):  # noqa: B017
            await KafkaTransport(e).connect()

        await broker.start()
        second = await open_(opened, e)
        again = await collect(second, 2, timeout_s=60)
        # S3 storage kept the records and the committed offset (1): m1 and m2 again
        assert [d.body for d in again] == [b"m1", b"m2"]
        for delivery in again:
            await second.ack(delivery)
        await second.publish(reply, b"after", message_id="r-1", correlation_id="c-1")
        assert await broker.read(reply, 1, 20) == [b"after"]

        await second.close()
        await broker.restart()  # restart() as the shared protocol has it
        third = await open_(opened, e)
        await broker.send(source, b"m3")
        last = await collect(third, 1, timeout_s=60)
        assert [d.body for d in last] == [b"m3"]
    finally:
        await broker.close()
