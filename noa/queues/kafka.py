"""The Kafka transport (aiokafka): a consumer group member that commits only what is done.

What it promises:

- **Nothing skipped.** Auto-commit is off. An acknowledged offset is committed only when every
  offset handed out before it in its partition was acknowledged too (``offsets.py``): a crash
  redelivers exactly the messages not yet done (and no earlier one is lost), whatever order
  the jobs finish in. Partitions are tracked independently.
- **Rebalances.** When partitions are revoked, what this member tracked of them is forgotten:
  their uncommitted messages go to the next owner, and acknowledgements arriving for them
  afterwards are ignored (the new owner's jobs are idempotent on the same message ids).
- **In-flight bound.** ``receive`` never hands out more than ``Endpoints.prefetch`` messages
  that are not acknowledged yet (the rest stay in the consumer's buffer, unconsumed).
- **Durable publish.** ``acks="all"``: when ``publish`` returns the broker has the record. The
  record's key is the message id, and it carries ``message_id`` and ``correlation_id`` headers.
  Idempotent producing is an option (``options["idempotence"]``), off by default: tansu 0.6
  answers ``InitProducerId`` with an unknown error.
- **Ids.** ``Delivery.broker_id`` is the record's ``message_id`` header, or
  ``"<topic>:<partition>:<offset>"`` without one; ``correlation_id`` and ``reply_to`` come from
  the headers of those names.
- **Failures raise.** aiokafka retries forever inside; here every broker call is bounded by
  ``options["timeout_s"]`` (10 s), and a ``receive`` that got nothing checks the cluster's
  metadata, so an unreachable broker makes ``receive``, ``ack``, ``publish`` and ``lag`` raise.
  ``close`` is idempotent and never raises.
- **Lag.** Over every partition of the source: its end offset minus the group's committed
  offset (the beginning offset when none was committed).

``options``: ``partitions`` (of the topics ``declare`` creates, 1), ``timeout_s``,
``idempotence``, and aiokafka's ``session_timeout_ms``, ``heartbeat_interval_ms``,
``request_timeout_ms``, ``retry_backoff_ms``, ``metadata_max_age_ms``, ``rebalance_timeout_ms``,
``max_poll_interval_ms``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition

from noa.queues.offsets import OffsetTracker
from noa.queues.transport import Delivery, Endpoints

logger = logging.getLogger("noa.queues.kafka")
T = TypeVar("T")
CLIENT_OPTIONS = (
    "session_timeout_ms",
    "heartbeat_interval_ms",
    "request_timeout_ms",
    "retry_backoff_ms",
    "metadata_max_age_ms",
    "rebalance_timeout_ms",
    "max_poll_interval_ms",
)
ALREADY_EXISTS = 36  # TOPIC_ALREADY_EXISTS


@dataclass(frozen=True)
class KafkaHandle:
    """What ``ack`` needs of a delivery: its partition and offset, and the token of the
    partition's tracking when it was handed out (stale after a revocation or a reconnect)."""

    partition: TopicPartition
    offset: int
    token: int


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, transport: KafkaTransport) -> None:
        self.transport = transport

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.transport.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        logger.debug("kafka %s: assigned %s", self.transport.endpoints.consumer, assigned)


class KafkaTransport:
    """One consumer group member and one producer; see the module docstring."""

    kind = "kafka"

    def __init__(self, endpoints: Endpoints) -> None:
        if not endpoints.url:
            raise ValueError("the Kafka transport needs the bootstrap servers as its url")
        self.endpoints = endpoints
        options = endpoints.options
        self.timeout_s = float(options.get("timeout_s", 10.0))
        self.partitions = int(options.get("partitions", 1))
        self.idempotence = bool(options.get("idempotence", False))
        self.client_options: dict[str, Any] = {
            k: int(options[k]) for k in CLIENT_OPTIONS if k in options
        }
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self._tokens: dict[TopicPartition, int] = {}
        self._counter = itertools.count(1)
        self._freed = asyncio.Event()
        self._commit_lock = asyncio.Lock()

    async def connect(self) -> None:
        await self.close()
        e = self.endpoints
        try:
            if e.declare:
                await self._declare()
            producer = AIOKafkaProducer(
                bootstrap_servers=e.url,
                client_id=e.consumer,
                acks="all",
                enable_idempotence=self.idempotence,
                **{
                    **self._only("retry_backoff_ms", "metadata_max_age_ms"),
                    # the producer's own bound: a record not acknowledged by then fails and is
                    # dropped (cut short from outside, it would stay queued and land later)
                    "request_timeout_ms": self._send_timeout_ms(),
                },
            )
            self._producer = producer
            await self._bounded(producer.start())
            consumer = AIOKafkaConsumer(
                bootstrap_servers=e.url,
                group_id=e.group,
                client_id=e.consumer,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                **self.client_options,
            )
            self._consumer = consumer
            await self._bounded(consumer.start())
            # subscribed after start: start() would wait for the group's first assignment;
            # this way the join goes on in the background and receive() waits for it
            consumer.subscribe([e.source], listener=_Rebalance(self))
        except BaseException:
            await self.close()
            raise

    async def receive(self, max_messages: int, wait_s: float) -> list[Delivery]:
        consumer = self._live()
        room = min(max_messages, self.endpoints.prefetch - self._tracker.in_flight())
        if room <= 0:  # the in-flight bound: wait for an acknowledgement to free a place
            self._freed.clear()
            try:
                await asyncio.wait_for(self._freed.wait(), wait_s)
            except TimeoutError:
                return []
            room = min(max_messages, self.endpoints.prefetch - self._tracker.in_flight())
            if room <= 0:
                return []
        try:  # bounded: while the group rebalances getmany waits for it, whatever its timeout
            batches = await asyncio.wait_for(
                consumer.getmany(timeout_ms=int(wait_s * 1000), max_records=room), wait_s + 0.1
            )
        except TimeoutError:
            batches = {}
        records = [r for batch in batches.values() for r in batch]
        while records and len(records) < room:  # tansu answers a fetch with one batch
            try:  # a rebalance just begun would hold it: keep what came
                more = await asyncio.wait_for(
                    consumer.getmany(timeout_ms=0, max_records=room - len(records)), 0.5
                )
            except TimeoutError:
                break
            if not more:
                break
            records.extend(r for batch in more.values() for r in batch)
        if not records:
            # getmany swallows connection errors and returns nothing: ask for the metadata,
            # which raises when no broker answers.
            await self._bounded(consumer.topics())
            return []
        return [self._delivery(record) for record in records]

    async def ack(self, delivery: Delivery) -> None:
        handle = delivery.handle
        if not isinstance(handle, KafkaHandle):
            raise TypeError(f"not a Kafka delivery: {delivery.broker_id}")
        consumer = self._live()
        tp = handle.partition
        if self._tokens.get(tp) != handle.token or not self._tracker.ack(tp, handle.offset):
            return  # revoked, reconnected since, or acknowledged already
        self._freed.set()
        async with self._commit_lock:  # commits of a partition in order, never backwards
            if self._tokens.get(tp) != handle.token:
                return
            point = self._tracker.commit_point(tp)
            if point is None:
                return
            try:
                await self._bounded(consumer.commit({tp: OffsetAndMetadata(point, "")}))
            except (CommitFailedError, IllegalStateError):
                if self._tokens.get(tp) != handle.token:
                    return  # revoked meanwhile: the next owner receives it again
                raise
            self._tracker.committed(tp, point)

    async def publish(
        self, destination: str, body: bytes, *, message_id: str, correlation_id: str | None
    ) -> None:
        producer = self._producer
        if producer is None:
            raise RuntimeError("the Kafka transport is not connected")
        headers = [("message_id", message_id.encode())]
        if correlation_id is not None:
            headers.append(("correlation_id", correlation_id.encode()))
        send = producer.send_and_wait(destination, body, key=message_id.encode(), headers=headers)
        await asyncio.wait_for(send, self._send_timeout_ms() / 1000 + self.timeout_s)

    async def lag(self) -> int | None:
        consumer = self._live()
        source = self.endpoints.source
        numbers = consumer.partitions_for_topic(source)
        if not numbers:
            return None
        tps = [TopicPartition(source, n) for n in sorted(numbers)]
        ends = await self._bounded(consumer.end_offsets(tps))
        begins = await self._bounded(consumer.beginning_offsets(tps))
        total = 0
        for tp in tps:
            committed = await self._bounded(consumer.committed(tp))
            start = committed if committed is not None else begins[tp]
            total += max(0, ends[tp] - start)
        return total

    async def close(self) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        self._tracker = OffsetTracker()
        self._tokens.clear()
        for client in (consumer, producer):
            if client is None:
                continue
            try:
                await asyncio.wait_for(client.stop(), self.timeout_s)
                continue
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # aiokafka's consumer.stop() lets its fetcher's cancellation out when the
                # broker is gone, before it closes its client: swallowed, and closed below
            except Exception as exc:  # close never raises
                logger.debug("kafka %s: close: %r", self.endpoints.consumer, exc)
            await self._close_client(client)

    async def _close_client(self, client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
        """Close the network client of a consumer or producer whose stop() was cut short: left
        open, its metadata task and connections would outlive every reconnect."""
        inner = getattr(client, "_client", None)
        if inner is None:
            return
        try:
            await asyncio.wait_for(inner.close(), self.timeout_s)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        except Exception as exc:
            logger.debug("kafka %s: close the client: %r", self.endpoints.consumer, exc)

    # -- the rebalance listener's -------------------------------------------------------------

    def revoked(self, partitions: set[TopicPartition]) -> None:
        """Forget ``partitions``: their acknowledgements from now on are ignored."""
        self._tracker.forget(partitions)
        for tp in partitions:
            self._tokens.pop(tp, None)
        self._freed.set()

    # -- helpers -------------------------------------------------------------------------------

    def _delivery(self, record: ConsumerRecord[Any, Any]) -> Delivery:
        tp = TopicPartition(record.topic, record.partition)
        token = self._tokens.get(tp)
        if token is None:
            token = self._tokens[tp] = next(self._counter)
        try:
            self._tracker.handed(tp, record.offset)
        except ValueError:  # the position went back (an offset reset): track it afresh
            self._tracker.forget([tp])
            token = self._tokens[tp] = next(self._counter)
            self._tracker.handed(tp, record.offset)
        headers = {
            str(k): (v.decode("utf-8", "replace") if v is not None else "")
            for k, v in (record.headers or ())
        }
        value = record.value if isinstance(record.value, bytes) else b""
        return Delivery(
            broker_id=headers.get("message_id")
            or f"{record.topic}:{record.partition}:{record.offset}",
            body=value,
            headers=headers,
            handle=KafkaHandle(tp, record.offset, token),
            correlation_id=headers.get("correlation_id"),
            reply_to=headers.get("reply_to"),
        )

    async def _declare(self) -> None:
        e = self.endpoints
        names = list(dict.fromkeys(n for n in (e.source, e.reply_to, e.dead_letter) if n))
        admin = AIOKafkaAdminClient(
            bootstrap_servers=e.url,
            client_id=e.consumer,
            **self._only("request_timeout_ms", "retry_backoff_ms", "metadata_max_age_ms"),
        )
        try:
            await self._bounded(admin.start())
            existing = set(await self._bounded(admin.list_topics()))
            missing = [n for n in names if n not in existing]
            if missing:
                topics = [NewTopic(n, self.partitions, 1) for n in missing]
                response = await self._bounded(admin.create_topics(topics))
                for name, code, *_ in response.topic_errors:
                    if code not in (0, ALREADY_EXISTS):
                        raise KafkaError(f"creating topic {name}: error {code}")
        finally:
            try:
                await asyncio.wait_for(admin.close(), self.timeout_s)
            except Exception as exc:  # the declare counts, not the close
                logger.debug("kafka %s: admin close: %r", e.consumer, exc)

    def _send_timeout_ms(self) -> int:
        return int(self.client_options.get("request_timeout_ms", self.timeout_s * 1000))

    def _only(self, *names: str) -> dict[str, Any]:
        return {k: v for k, v in self.client_options.items() if k in names}

    def _live(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the Kafka transport is not connected")
        return self._consumer

    async def _bounded(self, call: Awaitable[T]) -> T:
        return await asyncio.wait_for(call, self.timeout_s)
