"""The SQS transport against a real SQS API (moto_server): delete on ack and redelivery after
the visibility timeout, publishes with message and correlation id attributes, the queue depth
as lag, ``prefetch`` as the in-flight bound, a broker stopped and started again (a private
moto_server, which forgets its queues), and the SQS specifics (held messages' visibility
extended, FIFO queues with deduplication on the message id, queue URLs as names)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from broker_sqs import Probe, private
from brokers import probe, unique

from noa.queues.sqs import QueueMissing, SqsTransport
from noa.queues.transport import Delivery, Endpoints, UndeliverableError

Names = tuple[str, str, str]


@pytest.fixture
async def sqs() -> AsyncIterator[Probe]:
    made = probe("sqs")
    assert isinstance(made, Probe)
    yield made
    await made.close()


@pytest.fixture
async def names(sqs: Probe) -> AsyncIterator[Names]:
    made = (unique("src"), unique("reply"), unique("dead"))
    yield made
    for name in made:
        with contextlib.suppress(Exception):  # never made, or deleted already
            await sqs.delete(name)


@pytest.fixture
async def transports() -> AsyncIterator[list[SqsTransport]]:
    """Transports a test makes (``append``); closed after it."""
    made: list[SqsTransport] = []
    yield made
    for transport in made:
        await transport.close()


def endpoints(sqs: Probe, names: Names, **changes: object) -> Endpoints:
    return dataclasses.replace(sqs.endpoints(*names), **changes)  # type: ignore[arg-type]


def visibility(ends: Endpoints, seconds: int) -> Endpoints:
    return dataclasses.replace(ends, options={**ends.options, "visibility_s": seconds})


async def connected(transports: list[SqsTransport], ends: Endpoints) -> SqsTransport:
    transport = SqsTransport(ends)
    transports.append(transport)
    await transport.connect()
    return transport


async def gather(transport: SqsTransport, n: int, timeout_s: float = 10) -> list[Delivery]:
    """Receive until ``n`` deliveries came (or the deadline passed)."""
    out: list[Delivery] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out.extend(await transport.receive(n - len(out), wait_s=1))
    return out


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.05)


async def test_receive_then_ack_deletes_the_message(
    sqs: Probe, names: Names, transports: list[SqsTransport]
) -> None:
    ends = sqs.endpoints(*names)
    first = await connected(transports, ends)  # declares the queues
    await sqs.send(names[0], b'{"n": 1}', message_id="msg-1")
    [got] = await gather(first, 1)
    assert (got.broker_id, got.body) == ("msg-1", b'{"n": 1}')
    assert first.held == 1
    await first.ack(got)
    assert first.held == 0
    assert await sqs.depth(names[0]) == (0, 0)  # deleted: neither waiting nor in flight
    await first.close()
    second = await connected(transports, ends)
    assert await second.receive(10, wait_s=1) == []
    assert await second.lag() == 0


async def test_not_acked_then_closed_is_delivered_again_with_the_same_ids(
    sqs: Probe, names: Names, transports: list[SqsTransport]
) -> None:
    ends = visibility(sqs.endpoints(*names), 2)
    await sqs.create(*names)
    await sqs.send(names[0], b'{"n": 2}', message_id="msg-2")
    await sqs.send(names[0], b'{"n": 3}')  # no message_id attribute: SQS's MessageId names it
    first = await connected(transports, ends)
    held = await gather(first, 2)
    assert len(held) == 2
    await first.close()
    await first.close()  # idempotent
    second = await connected(transports, ends)
    again = await gather(second, 2, timeout_s=20)  # once the visibility timeout ran out
    by_body = {d.body: d for d in held}
    assert {d.body for d in again} == set(by_body)
    for delivery in again:
        before = by_body[delivery.body]
        assert delivery.broker_id == before.broker_id
        assert delivery.headers["sqs_message_id"] == before.headers["sqs_message_id"]
        assert delivery.headers["sqs_receive_count"] == "2"
        await second.ack(delivery)
    assert {d.broker_id for d in again} == {"msg-2", by_body[b'{"n": 3}'].headers["sqs_message_id"]}
    assert await second.receive(10, wait_s=0.5) == []


async def test_publish_lands_with_message_and_correlation_id_attributes(
    sqs: Probe, names: Names, transports: list[SqsTransport]
) -> None:
    transport = await connected(transports, sqs.endpoints(*names))
    await transport.publish(names[1], b'{"ok": true}', message_id="res-1", correlation_id="c-9")
    await transport.publish(names[2], b'{"dead": 1}', message_id="dl-1", correlation_id=None)
    [reply] = await sqs.take(names[1], 1, timeout_s=10)
    assert reply["Body"] == '{"ok": true}'
    attributes = {k: v["StringValue"] for k, v in reply["MessageAttributes"].items()}
    assert attributes == {"message_id": "res-1", "correlation_id": "c-9"}
    [dead] = await sqs.take(names[2], 1, timeout_s=10)
    assert dead["Body"] == '{"dead": 1}'
    assert {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()} == {
        "message_id": "dl-1"
    }


async def test_publish_refused_is_undeliverable_and_the_connection_stays(
    sqs: Probe, names: Names, transports: list[SqsTransport]
) -> None:
    transport = await connected(transports, sqs.endpoints(*names))
    with pytest.raises(UndeliverableError):
        await transport.publish(unique("nowhere"), b"{}", message_id="x", correlation_id=None)
    with pytest.raises(UndeliverableError):  # SQS bodies are text
        await transport.publish(names[1], b"\xff\xfe", message_id="y", correlation_id=None)
    await transport.publish(names[1], b"{}", message_id="z", correlation_id=None)
    assert await sqs.read(names[1], 1, timeout_s=10) == [b"{}"]
    # sent at the same moment (one batch), a body over SQS's size limit is refused alone
    sent = await asyncio.gather(
        *(
            transport.publish(names[1], body, message_id=f"m{i}", correlation_id=None)
            for i, body in enumerate([b'"a"', b'"' + b"x" * (1100 * 1024) + b'"', b'"b"'])
        ),
        return_exceptions=True,
    )
    assert sent[0] is None and sent[2] is None and isinstance(sent[1], UndeliverableError)
    assert sorted(await sqs.read(names[1], 2, timeout_s=10)) == [b'"a"', b'"b"']


async def test_lag_counts_messages_waiting_not_those_held(
    sqs: Probe, names: Names, transports: list[SqsTransport]
) -> None:
    await sqs.create(*names)
    for i in range(5):
        await sqs.send(names[0], b"{}", message_id=f"m{i}")
    transport = await connected(transports, endpoints(sqs, names, prefetch=2))
    assert await transport.lag() == 5
    held = await gather(transport, 2)
    assert len(held) == 2
    assert await transport.lag() == 3
    await transport.ack(held[0])
    assert await transport.lag() == 3
    assert await sqs.depth(names[0]) == (3, 1)


async def test_prefetch_bounds_what_is_held(
    sqs: Probe, names: Names, transports: list[SqsTransport]
) -> None:
    await sqs.create(*names)
    for i in range(10):
        await sqs.send(names[0], b"{}", message_id=f"m{i}")
    transport = await connected(transports, endpoints(sqs, names, prefetch=3))

    async def up_to(n: int) -> list[Delivery]:
        """Receives of 10 until ``n`` came: never more than the free slots."""
        out: list[Delivery] = []
        deadline = time.monotonic() + 10
        while len(out) < n and time.monotonic() < deadline:
            out.extend(await transport.receive(10, wait_s=1))
            assert len(out) <= n
        return out

    held = await up_to(3)
    assert len(held) == 3
    assert await transport.receive(10, wait_s=0.3) == []  # full: none taken from SQS
    assert await transport.lag() == 7
    await transport.ack(held[0])
    more = await up_to(1)
    assert len(more) == 1
    assert await transport.receive(10, wait_s=0.3) == []
    assert transport.held == 3
    assert await transport.lag() == 6


async def test_a_receive_takes_at_most_max_messages_and_ten(
    sqs: Probe, names: Names, transports: list[SqsTransport]
) -> None:
    await sqs.create(*names)
    for i in range(15):
        await sqs.send(names[0], b"{}", message_id=f"m{i}")
    transport = await connected(transports, sqs.endpoints(*names))
    got: list[Delivery] = []
    deadline = time.monotonic() + 15
    while len(got) < 15 and time.monotonic() < deadline:
        batch = await transport.receive(15, wait_s=1)
        assert len(batch) <= 10  # SQS's bound per call
        got.extend(batch)
    assert sorted(d.broker_id or "" for d in got) == sorted(f"m{i}" for i in range(15))
    for delivery in got[:5]:
        await transport.ack(delivery)
    await sqs.send(names[0], b"{}", message_id="a")
    await sqs.send(names[0], b"{}", message_id="b")
    await sqs.send(names[0], b"{}", message_id="c")
    seen: list[Delivery] = []
    while len(seen) < 3 and time.monotonic() < deadline + 10:
        batch = await transport.receive(1, wait_s=1)
        assert len(batch) <= 1
        seen.extend(batch)
    assert sorted(d.broker_id or "" for d in seen) == ["a", "b", "c"]


async def test_message_attributes_become_the_delivery(
    sqs: Probe, names: Names, transports: list[SqsTransport]
) -> None:
    await sqs.create(*names)
    await sqs.send(
        names[0], b"{}", message_id="p-1", correlation_id="corr-7", reply_to="their-replies",
        tenant="acme",
    )  # fmt: skip
    await sqs.send(names[0], b"[]")
    transport = await connected(transports, sqs.endpoints(*names))
    got = {d.body: d for d in await gather(transport, 2)}
    first, bare = got[b"{}"], got[b"[]"]
    assert (first.broker_id, first.correlation_id, first.reply_to) == (
        "p-1",
        "corr-7",
        "their-replies",
    )
    assert first.headers["tenant"] == "acme" and first.headers["sqs_receive_count"] == "1"
    assert bare.broker_id == bare.headers["sqs_message_id"]  # SQS's MessageId
    assert (bare.correlation_id, bare.reply_to) == (None, None)


async def test_held_messages_are_extended_and_after_close_delivered_again(
    sqs: Probe, names: Names, transports: list[SqsTransport]
) -> None:
    ends = visibility(sqs.endpoints(*names), 2)
    await sqs.create(*names)
    await sqs.send(names[0], b'{"slow": 1}', message_id="slow-1")
    holder = await connected(transports, ends)
    [held] = await gather(holder, 1)
    other = await connected(transports, dataclasses.replace(ends, consumer="noa-2"))
    started = time.monotonic()
    while time.monotonic() - started < 5:  # more than twice the visibility timeout
        assert await other.receive(10, wait_s=1) == []  # extended: nobody else gets it
    assert await sqs.depth(names[0]) == (0, 1)
    await holder.close()  # extending stops: the message comes back once its timeout runs out
    [again] = await gather(other, 1, timeout_s=15)
    assert (again.broker_id, again.body) == (held.broker_id, held.body) == ("slow-1", held.body)
    await other.ack(again)
    assert await sqs.depth(names[0]) == (0, 0)


async def test_fifo_queues_receive_ack_and_publish_once_per_message_id(
    sqs: Probe, transports: list[SqsTransport]
) -> None:
    names = (unique("src") + ".fifo", unique("reply") + ".fifo", unique("dead"))
    try:
        transport = await connected(transports, sqs.endpoints(*names))
        for name in names[:2]:  # declared FIFO, without content-based deduplication
            found = await sqs.attributes(name)
            assert found["FifoQueue"] == "true"
            assert found["ContentBasedDeduplication"] == "false"
        assert "FifoQueue" not in await sqs.attributes(names[2])
        for i in range(3):
            await sqs.send(names[0], f'{{"n": {i}}}'.encode(), message_id=f"f-{i}", group="g1")
        got: list[Delivery] = []
        deadline = time.monotonic() + 15
        while len(got) < 3 and time.monotonic() < deadline:
            batch = await transport.receive(10, wait_s=1)
            for delivery in batch:
                assert delivery.headers["sqs_group_id"] == "g1"
                await transport.ack(delivery)
            got.extend(batch)
        assert [d.broker_id for d in got] == ["f-0", "f-1", "f-2"]  # in order
        assert await transport.lag() == 0
        # a result published twice (a crash between publish and outbox delete): delivered once
        await transport.publish(names[1], b'{"r": 1}', message_id="res-1", correlation_id="c-1")
        await transport.publish(names[1], b'{"r": 1}', message_id="res-1", correlation_id="c-1")
        await transport.publish(names[1], b'{"r": 2}', message_id="res-2", correlation_id=None)
        taken = await sqs.take(names[1], 2, timeout_s=10)
        assert [m["Body"] for m in taken] == ['{"r": 1}', '{"r": 2}']
        groups = [m["Attributes"]["MessageGroupId"] for m in taken]
        dedupes = [m["Attributes"]["MessageDeduplicationId"] for m in taken]
        assert (groups, dedupes) == (["c-1", "res-2"], ["res-1", "res-2"])
        # an id SQS would refuse as a deduplication id is hashed, still once per id
        odd = "ü" * 200
        await transport.publish(names[1], b"{}", message_id=odd, correlation_id=None)
        await transport.publish(names[1], b"{}", message_id=odd, correlation_id=None)
        [once] = await sqs.take(names[1], 1, timeout_s=5)
        assert once["MessageAttributes"]["message_id"]["StringValue"] == odd
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                await sqs.delete(name)


async def test_queue_urls_are_accepted_as_names(
    sqs: Probe, names: Names, transports: list[SqsTransport]
) -> None:
    await sqs.create(*names)
    source, reply = await sqs.queue_url(names[0]), await sqs.queue_url(names[1])
    ends = endpoints(sqs, names, source=source, reply_to=reply)
    transport = await connected(transports, ends)
    await sqs.send(names[0], b"{}", message_id="u-1")
    [got] = await gather(transport, 1)
    await transport.ack(got)
    await transport.publish(reply, b'{"u": 1}', message_id="u-r", correlation_id=None)
    assert await sqs.read(names[1], 1, timeout_s=10) == [b'{"u": 1}']
    assert await transport.lag() == 0


async def test_without_declare_a_missing_source_fails_connect(sqs: Probe, names: Names) -> None:
    transport = SqsTransport(endpoints(sqs, names, declare=False))
    with pytest.raises(QueueMissing):  # a BrokerGone: the worker retries (declare off)
        await transport.connect()
    await transport.close()
    with pytest.raises(ConnectionError):
        await transport.receive(1, wait_s=0)
    await sqs.create(names[0])  # existing: used as it is, reply queues not made
    await transport.connect()
    assert await transport.lag() == 0
    with pytest.raises(UndeliverableError):
        await transport.publish(names[1], b"{}", message_id="x", correlation_id=None)
    await transport.close()


async def test_close_wakes_a_long_poll(
    sqs: Probe, names: Names, transports: list[SqsTransport]
) -> None:
    transport = await connected(transports, sqs.endpoints(*names))
    waiting = asyncio.create_task(transport.receive(10, wait_s=20))
    await asyncio.sleep(0.2)
    await transport.close()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(waiting, timeout=5)


async def test_a_delivery_of_an_earlier_connection_is_still_acked(
    sqs: Probe, names: Names, transports: list[SqsTransport]
) -> None:
    """SQS receipt handles outlive a client: reconnecting does not make an ack fail."""
    await sqs.create(*names)
    await sqs.send(names[0], b"{}", message_id="old")
    transport = await connected(transports, sqs.endpoints(*names))
    [old] = await gather(transport, 1)
    await transport.connect()  # the worker reconnects the same transport
    assert transport.held == 0
    await transport.ack(old)
    assert await sqs.depth(names[0]) == (0, 0)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Probe]:
    made = await private(tmp_path)
    yield made
    await made.close()


async def test_broker_stopped_calls_raise_and_after_restart_a_new_transport_works(
    server: Probe, transports: list[SqsTransport]
) -> None:
    src, reply, dead = unique("src"), unique("reply"), unique("dead")
    ends = dataclasses.replace(
        server.endpoints(src, reply, dead),
        options={"region": "us-east-1", "visibility_s": 2, "max_attempts": 1},
    )
    transport = await connected(transports, ends)
    await server.send(src, b'{"n": 1}', message_id="lost-1")
    [held] = await gather(transport, 1)

    await server.stop()
    with pytest.raises(ConnectionError):
        await transport.receive(10, wait_s=1)
    with pytest.raises(ConnectionError):
        await transport.ack(held)
    with pytest.raises(ConnectionError):
        await transport.publish(reply, b"{}", message_id="res-1", correlation_id=None)
    with pytest.raises(ConnectionError):
        await transport.lag()
    down = SqsTransport(ends)
    transports.append(down)
    with pytest.raises(ConnectionError):  # refused: nothing listens
        await down.connect()

    await server.start()  # moto forgot every queue (and the message held)
    with pytest.raises(ConnectionError):  # the source this connection knew is gone
        await transport.receive(10, wait_s=0)
    await transport.close()
    fresh = await connected(transports, ends)  # declares the queues again
    assert await fresh.lag() == 0
    await server.send(src, b'{"n": 2}', message_id="after-1")
    [got] = await gather(fresh, 1)
    assert (got.broker_id, got.body) == ("after-1", b'{"n": 2}')
    await fresh.ack(got)
    await fresh.publish(reply, b'{"r": 2}', message_id="res-2", correlation_id="c")
    assert await server.read(reply, 1, timeout_s=10) == [b'{"r": 2}']
    await transport.connect()  # the same transport object connects again too
    assert await transport.lag() == 0
