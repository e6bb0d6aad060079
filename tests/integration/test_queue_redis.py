"""The Redis Streams transport against the suite's Redis: entries read through a consumer
group, acknowledged with XACK; what a consumer held and did not acknowledge is read again by it
after a reconnect, and claimed by another once idle (a consumer that died); the prefetch bound,
the lag, the fields of a publish; a Redis restarted (a private one) makes calls fail until it is
back, and the group and the unacknowledged entries survive it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from broker_redis import Probe, private
from brokers import unique, url_of

from noa.queues.redis_streams import RedisStreamsTransport
from noa.queues.transport import Delivery, Endpoints


def endpoints(url: str, source: str, consumer: str = "c1", **options: object) -> Endpoints:
    return Endpoints(
        url=url, source=source, group="noa", consumer=consumer, prefetch=4,
        options={"claim_idle_s": 0.2, **options},
    )  # fmt: skip


async def take(t: RedisStreamsTransport, n: int, timeout_s: float = 5.0) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(got) < n and asyncio.get_running_loop().time() < deadline:
        got.extend(await t.receive(n - len(got), 0.1))
    return got


async def test_receive_then_ack_is_not_delivered_again() -> None:
    url, source = url_of("redis"), unique("in")
    probe = Probe(url)
    t = RedisStreamsTransport(endpoints(url, source))
    await t.connect()
    try:
        await probe.send(source, b'{"body": {}}', message_id="m-1")
        (d,) = await take(t, 1)
        assert d.broker_id == "m-1" and d.body == b'{"body": {}}'
        await t.ack(d)
        await t.close()
        await t.connect()  # same consumer: its pending entries are read first
        assert await t.receive(4, 0.1) == []
        assert await t.lag() == 0
    finally:
        await t.close()
        await probe.close()


async def test_what_was_held_is_read_again_and_claimed_by_another() -> None:
    url, source = url_of("redis"), unique("in")
    probe = Probe(url)
    first = RedisStreamsTransport(endpoints(url, source, "c1"))
    second = RedisStreamsTransport(endpoints(url, source, "c2"))
    await first.connect()
    await second.connect()
    try:
        await probe.send(source, b"one")
        await probe.send(source, b"two")
        held = await take(first, 2)
        assert [d.body for d in held] == [b"one", b"two"]
        assert held[0].broker_id == held[0].handle  # no message_id field: the entry id
        await first.ack(held[0])
        await first.close()
        await first.connect()  # reconnected: its unacknowledged entry comes back to it
        (again,) = await take(first, 1)
        assert again.handle == held[1].handle
        await first.close()  # and now it dies holding it: another claims it once idle
        await asyncio.sleep(0.3)
        (claimed,) = await take(second, 1, timeout_s=5)
        assert claimed.handle == held[1].handle and claimed.body == b"two"
        await second.ack(claimed)
        assert await second.receive(4, 0.1) == []
    finally:
        await first.close()
        await second.close()
        await probe.close()


async def test_prefetch_bounds_what_is_held_and_lag_counts_the_rest() -> None:
    url, source = url_of("redis"), unique("in")
    probe = Probe(url)
    t = RedisStreamsTransport(endpoints(url, source))
    await t.connect()
    try:
        for i in range(7):
            await probe.send(source, f"m{i}".encode())
        held = await take(t, 10, timeout_s=1)
        assert len(held) == 4 and t.held == 4  # prefetch 4
        assert await t.receive(10, 0.05) == []
        assert await t.lag() == 3
        await t.ack(held[0])
        assert len(await take(t, 1)) == 1
    finally:
        await t.close()
        await probe.close()


async def test_publish_writes_the_fields_a_consumer_reads() -> None:
    url, out = url_of("redis"), unique("out")
    probe = Probe(url)
    t = RedisStreamsTransport(endpoints(url, unique("in"), maxlen=1000))
    await t.connect()
    try:
        await t.publish(out, b'{"id": "m-1"}', message_id="m-1", correlation_id="c-1")
        ((_, fields),) = await probe.client.xrange(out)
        assert fields == {
            b"body": b'{"id": "m-1"}',
            b"message_id": b"m-1",
            b"correlation_id": b"c-1",
        }
        assert await probe.read(out, 1, timeout_s=2) == [b'{"id": "m-1"}']
    finally:
        await t.close()
        await probe.close()


async def test_a_restarted_redis_fails_the_calls_then_serves_again(tmp_path: Path) -> None:
    broker = await private(tmp_path)
    source = unique("in")
    t = RedisStreamsTransport(endpoints(broker.url, source))
    await t.connect()
    try:
        await broker.send(source, b"kept")
        (held,) = await take(t, 1)
        assert isinstance(broker, Probe) and broker.server is not None
        broker.server.terminate()
        broker.server.wait(timeout=30)
        with pytest.raises(Exception):  # noqa: B017 - whatever redis-py raises
            await t.receive(1, 0.1)
        await broker.restart()  # (stops what is already stopped, starts it again)
        await t.close()
        await t.connect()
        (again,) = await take(t, 1)  # the group and its pending entry survived
        assert again.handle == held.handle and again.body == b"kept"
    finally:
        await t.close()
        await broker.close()
