"""RabbitMQ as a bridge's broker (aio-pika, AMQP 0-9-1).

What it promises:

- **One plain connection, no reconnect of its own** (``aio_pika.connect``, not
  ``connect_robust``): the worker owns reconnects. When the connection or a channel is closed
  (the broker stopped, a channel error, the consumer cancelled because the source queue was
  deleted), every later ``receive``, ``ack``, ``publish`` and ``lag`` raises, including a
  ``receive`` already waiting on an empty queue.
- **Manual acks, ``prefetch`` as the in-flight bound**: the source queue is consumed with
  ``no_ack=False`` under ``basic.qos(prefetch_count=prefetch)``, so the broker hands out at
  most ``prefetch`` messages not yet acknowledged; they wait in an in-memory queue that
  ``receive`` drains. Whatever was handed out and not acknowledged (received or still waiting
  here) is requeued by the broker when the connection closes, and delivered again with the
  same ``message_id``. Acks asked for in the same turn of the event loop go out together
  (``_Acks``: one ``multiple`` ack for a run of consecutive deliveries), never waiting for a
  message that is not acknowledged yet.
- **Durable queues, persistent messages, publisher confirms**: with ``Endpoints.declare`` the
  source, reply and dead-letter queues are declared durable. ``publish`` sends to the default
  exchange (routing key = the destination queue) with ``delivery_mode`` persistent,
  ``message_id``, ``correlation_id`` and ``content_type: application/json``, ``mandatory`` so
  an unroutable message (no such queue) raises instead of vanishing, and returns only once the
  broker confirmed it (for a durable queue: written to disk).
- ``Delivery.broker_id`` is the AMQP ``message_id`` property (None when the producer set
  none); ``correlation_id`` and ``reply_to`` come from the AMQP properties; ``headers`` are
  the AMQP application headers as text.
- ``lag()`` is the source queue's ``message_count`` from a passive declare: messages ready,
  not counting those handed out and not yet acknowledged.

A queue that already exists is used as it is (quorum, dead-lettering, TTL arguments kept); a
missing one is declared durable, with ``options["queue_arguments"]`` if given (for example
``{"x-queue-type": "quorum"}``). ``Endpoints.options`` also: ``connect_timeout_s`` (default
10), ``publish_timeout_s`` (default 30: a publish the broker blocks, on a memory or disk
alarm, raises rather than hangs). The URL's query sets the AMQP client's own parameters
(``?heartbeat=30``: how soon a silently dead connection is noticed).

Errors: a lost connection or channel raises ``BrokerGone`` (a ``ConnectionError``); a
publish the broker could not route (no such queue) or nacked raises ``UndeliverableError``
(from aio-pika's ``PublishError`` / ``DeliveryError``): the connection stays up, and the
worker retries that message later instead of reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from noa.queues.transport import Delivery, Endpoints, UndeliverableError

CLOSE_TIMEOUT_S = 5.0


class BrokerGone(ConnectionError):
    """The connection or a channel to RabbitMQ was closed; the worker reconnects."""


_CLOSED = object()  # put on a link's inbox when it dies, to wake a waiting receive


class _Acks:
    """The acknowledgements asked for in one turn of the event loop, sent together: from the
    oldest delivery not yet acknowledged, the longest run of tags all asked for goes as one
    ``basic.ack(multiple=True)``, any other as its own ``basic.ack``. Nothing waits past that
    turn, so a message still being stored never holds back another's acknowledgement, and a
    multiple ack never covers a message that was not asked for."""

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self.channel = channel
        self.outstanding: set[int] = set()  # delivered, not yet acknowledged
        self._asked: set[int] = set()
        self._sent: asyncio.Future[None] | None = None  # the coming flush

    def delivered(self, tag: int) -> None:
        self.outstanding.add(tag)

    async def ack(self, tag: int) -> None:
        self._asked.add(tag)
        if self._sent is None:
            self._sent = asyncio.get_running_loop().create_future()
            self._sent.add_done_callback(lambda f: f.cancelled() or f.exception())
            asyncio.get_running_loop().create_task(self._flush(self._sent))
        await asyncio.shield(self._sent)

    async def _flush(self, sent: asyncio.Future[None]) -> None:
        asked, self._asked, self._sent = self._asked, set(), None
        run: int | None = None
        for tag in sorted(self.outstanding):
            if tag not in asked:
                break
            run = tag
        self.outstanding -= asked
        try:
            if run is not None:
                await self.channel.basic_ack(run, multiple=True)
            for tag in sorted(t for t in asked if run is None or t > run):
                await self.channel.basic_ack(tag)
        except Exception as e:
            sent.set_exception(BrokerGone(f"acknowledging on RabbitMQ failed: {e!r}"))
            return
        sent.set_result(None)


class _Link:
    """One connection's state: its channels, the consumer's inbox, why it died."""

    def __init__(self, connection: AbstractConnection) -> None:
        self.connection = connection
        self.consume: AbstractChannel | None = None
        self.publish: AbstractChannel | None = None
        self.underlay: aiormq.abc.AbstractChannel | None = None  # the consumer's AMQP channel
        self.acks: _Acks | None = None
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.failure: BaseException | None = None
        self.closing = False

    def fail(self, why: BaseException) -> None:
        if self.failure is None and not self.closing:
            self.failure = why
            self.inbox.put_nowait(_CLOSED)

    def on_close(self, sender: Any, exc: BaseException | None = None) -> None:
        what = "connection" if sender is self.connection else "channel"
        self.fail(BrokerGone(f"the RabbitMQ {what} was closed: {exc!r}"))

    def on_cancel(self, frame: Any) -> None:
        self.fail(BrokerGone("RabbitMQ cancelled the consumer (was the source queue deleted?)"))

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        if self.failure is None and not self.closing and self.acks is not None:
            assert message.delivery_tag is not None  # consumed with no_ack=False
            self.acks.delivered(message.delivery_tag)
            self.inbox.put_nowait(message)

    def check(self) -> None:
        if self.failure is not None:
            raise BrokerGone(str(self.failure)) from self.failure
        if self.connection.is_closed:
            raise BrokerGone("the RabbitMQ connection is closed")
        for channel in (self.consume, self.publish):
            if channel is None or channel.is_closed:
                raise BrokerGone("a RabbitMQ channel is closed")


class RabbitMqTransport:
    kind = "rabbitmq"

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        connect_timeout_s: float | None = None,
        publish_timeout_s: float | None = None,
    ) -> None:
        if not endpoints.url:
            raise ValueError("a RabbitMQ bridge needs the broker's URL (amqp://...)")
        if endpoints.prefetch < 1:
            raise ValueError("prefetch must be at least 1 (0 would mean no bound in AMQP)")
        self.endpoints = endpoints
        options = endpoints.options
        self.connect_timeout_s = float(
            connect_timeout_s
            if connect_timeout_s is not None
            else options.get("connect_timeout_s", 10.0)
        )
        self.publish_timeout_s = float(
            publish_timeout_s
            if publish_timeout_s is not None
            else options.get("publish_timeout_s", 30.0)
        )
        self._link: _Link | None = None

    async def connect(self) -> None:
        await self.close()  # a second connect starts over
        e = self.endpoints
        connection = await aio_pika.connect(str(e.url), timeout=self.connect_timeout_s)
        link = _Link(connection)
        try:
            connection.close_callbacks.add(link.on_close)
            if e.declare:
                for name in dict.fromkeys(n for n in (e.source, e.reply_to, e.dead_letter) if n):
                    await self._ensure_queue(connection, name)
            link.publish = await connection.channel(publisher_confirms=True, on_return_raises=True)
            link.publish.close_callbacks.add(link.on_close)
            link.consume = await connection.channel(publisher_confirms=False)
            link.consume.close_callbacks.add(link.on_close)
            await link.consume.set_qos(prefetch_count=e.prefetch, timeout=self.connect_timeout_s)
            # passive: a missing source queue (declare off) fails here (404), not later
            queue = await link.consume.declare_queue(
                e.source, passive=True, timeout=self.connect_timeout_s
            )
            link.underlay = await link.consume.get_underlay_channel()
            link.underlay.on_consumer_cancel_callbacks.add(link.on_cancel)
            link.acks = _Acks(link.underlay)
            await queue.consume(link.on_message, no_ack=False, timeout=self.connect_timeout_s)
            link.check()
        except BaseException:
            await _close_link(link)
            raise
        self._link = link

    async def _ensure_queue(self, connection: AbstractConnection, name: str) -> None:
        """Declare queue ``name`` durable unless it exists: an existing queue is used as it is
        (a quorum queue, one with a dead-letter exchange or a TTL), where declaring it again
        with other arguments would fail (406 PRECONDITION_FAILED)."""
        timeout = self.connect_timeout_s
        arguments = dict(self.endpoints.options.get("queue_arguments") or {}) or None
        for passive in (True, False):  # a 404 closes the channel: each try gets its own
            channel = await connection.channel(publisher_confirms=False)
            try:
                await channel.declare_queue(
                    name, durable=True, passive=passive, arguments=arguments, timeout=timeout
                )
                return
            except aiormq.exceptions.ChannelNotFoundEntity:
                if not passive:
                    raise
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()

    def _live(self) -> _Link:
        link = self._link
        if link is None:
            raise BrokerGone("the RabbitMQ transport is not connected")
        link.check()
        return link

    async def receive(self, max_messages: int, wait_s: float) -> list[Delivery]:
        link = self._live()
        if max_messages <= 0:
            return []
        items: list[Any] = []
        if link.inbox.empty() and wait_s > 0:
            try:
                items.append(await asyncio.wait_for(link.inbox.get(), timeout=wait_s))
            except TimeoutError:
                link.check()
                return []
        while len(items) < max_messages and not link.inbox.empty():
            items.append(link.inbox.get_nowait())
        if any(item is _CLOSED for item in items):
            link.check()  # raises: the link failed (those received are requeued by the broker)
            raise BrokerGone("the RabbitMQ connection was closed")
        return [_delivery(message) for message in items]

    async def ack(self, delivery: Delivery) -> None:
        link = self._live()
        message = delivery.handle
        if not isinstance(message, AbstractIncomingMessage):
            raise TypeError("not a delivery of the RabbitMQ transport")
        try:
            channel = message.channel
        except aiormq.exceptions.ChannelInvalidStateError:
            channel = None  # its channel is closed
        if channel is not link.underlay:
            # a delivery of an earlier connection or a closed channel: its tag means nothing
            # on this channel, and the broker requeued it when that channel closed
            raise BrokerGone("the delivery came on an earlier RabbitMQ connection")
        assert link.acks is not None and message.delivery_tag is not None
        await link.acks.ack(message.delivery_tag)

    async def publish(
        self, destination: str, body: bytes, *, message_id: str, correlation_id: str | None
    ) -> None:
        link = self._live()
        assert link.publish is not None
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            correlation_id=correlation_id,
            content_type="application/json",
        )
        # on_return_raises: an unroutable message raises PublishError; a nack, DeliveryError
        try:
            await link.publish.default_exchange.publish(
                message, routing_key=destination, mandatory=True, timeout=self.publish_timeout_s
            )
        except (aio_pika.exceptions.PublishError, aio_pika.exceptions.DeliveryError) as e:
            raise UndeliverableError(f"RabbitMQ refused a message to {destination!r}: {e}") from e

    async def lag(self) -> int | None:
        link = self._live()
        assert link.publish is not None
        queue = await link.publish.declare_queue(
            self.endpoints.source, passive=True, timeout=self.connect_timeout_s
        )
        count = getattr(queue.declaration_result, "message_count", None)
        return int(count) if count is not None else None

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await _close_link(link)


async def _close_link(link: _Link) -> None:
    """Close ``link``'s connection (the broker requeues what it handed out); never raises. A
    ``receive`` still waiting on it wakes and raises."""
    link.closing = True
    if link.failure is None:
        link.failure = BrokerGone("the RabbitMQ transport was closed")
    while not link.inbox.empty():
        link.inbox.get_nowait()
    link.inbox.put_nowait(_CLOSED)
    with contextlib.suppress(Exception):  # a connection already broken
        if not link.connection.is_closed:
            await asyncio.wait_for(link.connection.close(), timeout=CLOSE_TIMEOUT_S)


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _delivery(message: AbstractIncomingMessage) -> Delivery:
    headers = {str(k): _text(v) for k, v in (message.headers or {}).items() if v is not None}
    return Delivery(
        broker_id=message.message_id or None,
        body=message.body,
        headers=headers,
        handle=message,
        correlation_id=message.correlation_id or None,
        reply_to=message.reply_to or None,
    )
