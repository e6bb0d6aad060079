"""The RabbitMQ transport against a real broker: manual acks and redelivery, publisher
confirms with message and correlation ids, queue depth as lag, ``prefetch`` as the in-flight
bound, a broker stopped and started again (a private node), and the AMQP specifics (reply-to
and correlation-id properties, unroutable publishes, a consumer cancelled by the broker)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aio_pika
import pytest
from broker_rabbitmq import Probe, private
from brokers import probe, unique

from noa.queues.rabbitmq import RabbitMqTransport
from noa.queues.transport import Delivery, Endpoints, UndeliverableError


@pytest.fixture
async def rabbit() -> AsyncIterator[Probe]:
    made = probe("rabbitmq")
    assert isinstance(made, Probe)
    yield made
    await made.close()


@pytest.fixture
async def names(rabbit: Probe) -> AsyncIterator[tuple[str, str, str]]:
    made = (unique("src"), unique("reply"), unique("dead"))
    yield made
    for name in made:
        with contextlib.suppress(Exception):  # a test deleted it already
            await rabbit.delete(name)


@pytest.fixture
async def transports() -> AsyncIterator[list[RabbitMqTransport]]:
    """Transports a test makes (``append``); closed after it."""
    made: list[RabbitMqTransport] = []
    yield made
    for transport in made:
        await transport.close()


def endpoints(rabbit: Probe, names: tuple[str, str, str], **changes: object) -> Endpoints:
    return dataclasses.replace(rabbit.endpoints(*names), **changes)  # type: ignore[arg-type]


async def connected(transports: list[RabbitMqTransport], ends: Endpoints) -> RabbitMqTransport:
    transport = RabbitMqTransport(ends)
    transports.append(transport)
    await transport.connect()
    return transport


async def gather(transport: RabbitMqTransport, n: int, timeout_s: float = 10) -> list[Delivery]:
    """Receive until ``n`` deliveries came (or the deadline passed)."""
    out: list[Delivery] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out.extend(await transport.receive(n - len(out), wait_s=0.5))
    return out


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.05)


async def test_receive_then_ack_is_not_delivered_again(
    rabbit: Probe, names: tuple[str, str, str], transports: list[RabbitMqTransport]
) -> None:
    ends = rabbit.endpoints(*names)
    first = await connected(transports, ends)  # declares the queues
    await rabbit.send(names[0], b'{"n": 1}', message_id="msg-1")
    [got] = await gather(first, 1)
    assert (got.broker_id, got.body) == ("msg-1", b'{"n": 1}')
    await first.ack(got)
    await first.close()
    second = await connected(transports, ends)
    assert await second.receive(10, wait_s=0.5) == []
    assert await second.lag() == 0
    assert await rabbit.depth(names[0]) == 0


async def test_not_acked_then_closed_is_delivered_again_with_the_same_id(
    rabbit: Probe, names: tuple[str, str, str], transports: list[RabbitMqTransport]
) -> None:
    ends = rabbit.endpoints(*names)
    await rabbit.create(*names)
    await rabbit.send(names[0], b'{"n": 2}', message_id="msg-2")
    first = await connected(transports, ends)
    [held] = await gather(first, 1)
    await first.close()
    await first.close()  # idempotent
    second = await connected(transports, ends)
    [again] = await gather(second, 1)
    assert (again.broker_id, again.body) == (held.broker_id, held.body) == ("msg-2", b'{"n": 2}')
    await second.ack(again)
    assert await second.receive(10, wait_s=0.3) == []


async def test_acks_sent_together_cover_only_the_messages_acknowledged(
    rabbit: Probe, names: tuple[str, str, str], transports: list[RabbitMqTransport]
) -> None:
    """Acks made at once go as one multiple ack for a run of consecutive deliveries (and single
    acks for the rest): the ones not acknowledged, between and after them, come back."""
    ends = rabbit.endpoints(*names)
    await rabbit.create(*names)
    for i in range(10):
        await rabbit.send(names[0], b"{}", message_id=f"m-{i}")
    first = await connected(transports, ends)
    got = await gather(first, 10)
    assert [d.broker_id for d in got] == [f"m-{i}" for i in range(10)]
    link = first._link
    assert link is not None and link.acks is not None
    sent: list[tuple[int, bool]] = []
    channel = link.acks.channel

    class Spy:  # the AMQP channel, its basic.acks recorded
        async def basic_ack(self, tag: int, multiple: bool = False) -> None:
            sent.append((tag, multiple))
            await channel.basic_ack(tag, multiple=multiple)

    link.acks.channel = Spy()  # type: ignore[assignment]
    acked = [0, 1, 2, 3, 4, 7]
    await asyncio.gather(*(first.ack(got[i]) for i in acked))
    await first.ack(got[9])  # a later turn: the run before it is broken by m-5, m-6, m-8
    assert sent == [(5, True), (8, False), (10, False)]  # delivery tags count from 1
    await first.close()  # after the acks, on the same connection
    second = await connected(transports, ends)
    again = await gather(second, 3)
    assert sorted(d.broker_id or "" for d in again) == ["m-5", "m-6", "m-8"]
    assert await second.receive(10, wait_s=0.3) == []


async def test_publish_lands_persistent_with_message_and_correlation_ids(
    rabbit: Probe, names: tuple[str, str, str], transports: list[RabbitMqTransport]
) -> None:
    transport = await connected(transports, rabbit.endpoints(*names))
    await transport.publish(names[1], b'{"ok": true}', message_id="res-1", correlation_id="c-9")
    await transport.publish(names[2], b'{"dead": 1}', message_id="dl-1", correlation_id=None)
    [reply] = await rabbit.take(names[1], 1, timeout_s=10)
    assert reply.body == b'{"ok": true}'
    assert (reply.message_id, reply.correlation_id) == ("res-1", "c-9")
    assert reply.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert reply.content_type == "application/json"
    assert await rabbit.read(names[2], 1, timeout_s=10) == [b'{"dead": 1}']


async def test_publish_to_a_missing_queue_raises(
    rabbit: Probe, names: tuple[str, str, str], transports: list[RabbitMqTransport]
) -> None:
    transport = await connected(transports, rabbit.endpoints(*names))
    with pytest.raises(UndeliverableError):
        await transport.publish(unique("nowhere"), b"{}", message_id="x", correlation_id=None)
    # the channel survives an unroutable publish
    await transport.publish(names[1], b"{}", message_id="y", correlation_id=None)
    assert await rabbit.read(names[1], 1, timeout_s=10) == [b"{}"]


async def test_lag_counts_messages_waiting_not_those_handed_out(
    rabbit: Probe, names: tuple[str, str, str], transports: list[RabbitMqTransport]
) -> None:
    await rabbit.create(*names)
    for i in range(5):
        await rabbit.send(names[0], b"{}", message_id=f"m{i}")
    idle = await connected(transports, endpoints(rabbit, names, prefetch=2))
    held = await gather(idle, 2)
    assert len(held) == 2

    async def three() -> bool:
        return await idle.lag() == 3

    await eventually(three)  # 2 handed out (not acknowledged) are not waiting


async def test_prefetch_bounds_what_is_handed_out_and_not_acknowledged(
    rabbit: Probe, names: tuple[str, str, str], transports: list[RabbitMqTransport]
) -> None:
    await rabbit.create(*names)
    for i in range(10):
        await rabbit.send(names[0], b"{}", message_id=f"m{i}")
    transport = await connected(transports, endpoints(rabbit, names, prefetch=3))
    held = await gather(transport, 3)
    assert len(held) == 3
    assert await transport.receive(10, wait_s=0.5) == []  # the broker sends no fourth
    assert await transport.lag() == 7
    await transport.ack(held[0])
    more = await gather(transport, 1)
    assert len(more) == 1
    assert await transport.receive(10, wait_s=0.5) == []
    assert {d.broker_id for d in held + more} == {"m0", "m1", "m2", "m3"}


async def test_receive_takes_at_most_max_messages(
    rabbit: Probe, names: tuple[str, str, str], transports: list[RabbitMqTransport]
) -> None:
    await rabbit.create(*names)
    for i in range(5):
        await rabbit.send(names[0], b"{}", message_id=f"m{i}")
    transport = await connected(transports, rabbit.endpoints(*names))
    got: list[Delivery] = []
    deadline = time.monotonic() + 10
    while len(got) < 5 and time.monotonic() < deadline:
        batch = await transport.receive(2, wait_s=0.5)
        assert len(batch) <= 2
        got.extend(batch)
    assert sorted(d.broker_id or "" for d in got) == [f"m{i}" for i in range(5)]


async def test_amqp_properties_become_the_delivery(
    rabbit: Probe, names: tuple[str, str, str], transports: list[RabbitMqTransport]
) -> None:
    await rabbit.create(*names)
    await rabbit.send(
        names[0],
        b"{}",
        message_id="p-1",
        correlation_id="corr-7",
        reply_to="their-replies",
        headers={"tenant": "acme", "n": 3, "raw": bytearray(b"bytes")},
    )
    transport = await connected(transports, rabbit.endpoints(*names))
    [first] = await gather(transport, 1)
    assert (first.broker_id, first.correlation_id, first.reply_to) == (
        "p-1",
        "corr-7",
        "their-replies",
    )
    assert first.headers == {"tenant": "acme", "n": "3", "raw": "bytes"}
    # (a message without a message_id cannot be made here: aiormq gives every publish one)


async def test_without_declare_a_missing_source_fails_connect(
    rabbit: Probe, names: tuple[str, str, str]
) -> None:
    transport = RabbitMqTransport(endpoints(rabbit, names, declare=False))
    with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
        await transport.connect()
    await transport.close()
    with pytest.raises(ConnectionError):
        await transport.receive(1, wait_s=0)


async def test_a_consumer_cancelled_by_the_broker_makes_receive_raise(
    rabbit: Probe, names: tuple[str, str, str], transports: list[RabbitMqTransport]
) -> None:
    transport = await connected(transports, rabbit.endpoints(*names))
    waiting = asyncio.create_task(transport.receive(10, wait_s=60))
    await asyncio.sleep(0)  # let it wait on the empty queue
    await rabbit.delete(names[0])  # RabbitMQ cancels the consumer (basic.cancel)
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(waiting, timeout=20)
    with pytest.raises(ConnectionError):
        await transport.receive(10, wait_s=0)
    await transport.connect()  # connecting again declares the source again and works
    await rabbit.send(names[0], b"{}", message_id="after")
    [got] = await gather(transport, 1)
    assert got.broker_id == "after"


async def test_a_delivery_of_an_earlier_connection_is_not_acked_on_a_new_one(
    rabbit: Probe, names: tuple[str, str, str], transports: list[RabbitMqTransport]
) -> None:
    await rabbit.create(*names)
    await rabbit.send(names[0], b"{}", message_id="old")
    transport = await connected(transports, rabbit.endpoints(*names))
    [old] = await gather(transport, 1)
    await transport.connect()  # the worker reconnects the same transport
    with pytest.raises(ConnectionError):
        await transport.ack(old)
    [again] = await gather(transport, 1)
    assert again.broker_id == "old"
    await transport.ack(again)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Probe]:
    made = await private(tmp_path)
    yield made
    await made.close()


async def test_broker_stopped_calls_raise_and_after_restart_a_new_transport_works(
    node: Probe, transports: list[RabbitMqTransport]
) -> None:
    src, reply, dead = unique("src"), unique("reply"), unique("dead")
    ends = node.endpoints(src, reply, dead)
    transport = await connected(transports, ends)
    await node.send(src, b'{"n": 1}', message_id="kept-1")
    [held] = await gather(transport, 1)  # handed out, not acknowledged
    await transport.publish(reply, b'{"r": 1}', message_id="res-1", correlation_id="c")
    waiting = asyncio.create_task(transport.receive(10, wait_s=60))
    await asyncio.sleep(0)

    await node.stop()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(waiting, timeout=30)  # not left waiting on a dead connection
    with pytest.raises(ConnectionError):
        await transport.ack(held)
    with pytest.raises(ConnectionError):
        await transport.publish(reply, b"{}", message_id="res-2", correlation_id=None)
    with pytest.raises(ConnectionError):
        await transport.lag()
    await transport.close()
    down = RabbitMqTransport(ends)
    transports.append(down)
    with pytest.raises(ConnectionError):  # refused: the listener is closed
        await down.connect()

    await node.start()
    fresh = await connected(transports, ends)
    # the persistent message on the durable queue survived, and came back unacknowledged
    [again] = await gather(fresh, 1)
    assert (again.broker_id, again.body) == ("kept-1", b'{"n": 1}')
    await fresh.ack(again)
    assert await fresh.lag() == 0
    # what was published (confirmed) before the restart is still on the reply queue
    [result] = await node.take(reply, 1, timeout_s=10)
    assert (result.body, result.message_id) == (b'{"r": 1}', "res-1")
    await fresh.publish(reply, b'{"r": 2}', message_id="res-3", correlation_id=None)
    assert await node.read(reply, 1, timeout_s=10) == [b'{"r": 2}']
    # the same transport object connects again too
    await transport.connect()
    assert await transport.lag() == 0


async def test_close_wakes_a_waiting_receive(
    rabbit: Probe, names: tuple[str, str, str], transports: list[RabbitMqTransport]
) -> None:
    transport = await connected(transports, rabbit.endpoints(*names))
    waiting = asyncio.create_task(transport.receive(10, wait_s=60))
    await asyncio.sleep(0)
    await transport.close()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(waiting, timeout=20)


async def test_existing_queues_are_used_as_they_are(
    rabbit: Probe, names: tuple[str, str, str], transports: list[RabbitMqTransport]
) -> None:
    """Queues made by their owners with arguments of their own (a TTL, a length bound) are
    not declared again (that would fail: 406 PRECONDITION_FAILED)."""
    channel = await rabbit.channel()
    await channel.declare_queue(names[0], durable=True, arguments={"x-message-ttl": 600_000})
    await channel.declare_queue(names[1], durable=True, arguments={"x-max-length": 1000})
    await rabbit.send(names[0], b"{}", message_id="ttl-1")
    transport = await connected(transports, rabbit.endpoints(*names))
    [got] = await gather(transport, 1)
    assert got.broker_id == "ttl-1"
    await transport.ack(got)
    await transport.publish(names[1], b"{}", message_id="r", correlation_id=None)
    assert await rabbit.read(names[1], 1, timeout_s=10) == [b"{}"]


async def test_a_quorum_source_when_the_options_ask_for_one(
    rabbit: Probe, names: tuple[str, str, str], transports: list[RabbitMqTransport]
) -> None:
    ends = endpoints(rabbit, names, options={"queue_arguments": {"x-queue-type": "quorum"}})
    first = await connected(transports, ends)
    channel = await rabbit.channel()
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
        await channel.declare_queue(names[0], durable=True)  # it is no classic queue
    await rabbit.send(names[0], b"{}", message_id="q-1")
    [held] = await gather(first, 1)
    await first.close()
    second = await connected(transports, ends)
    [again] = await gather(second, 1)  # not acknowledged: delivered again
    assert again.broker_id == held.broker_id == "q-1"
    await second.ack(again)
    assert await second.receive(10, wait_s=0.3) == []
    assert await second.lag() == 0
