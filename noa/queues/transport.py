"""What a queue bridge needs of a broker: one small interface, one module per broker
(``rabbitmq.py``, ``kafka.py``, ``sqs.py``, ``redis_streams.py``).

A ``Transport`` is one connection to one broker for one bridge. The bridge's worker
(``worker.py``) drives it: ``connect``, then ``receive`` in a loop, ``ack`` each message once
its job is stored, ``publish`` results and dead letters, ``lag`` for the autoscaler, and
``close``; when any call raises (the broker went away), the worker closes the transport and
connects again after a backoff. Messages handed out and not acknowledged are the broker's to
deliver again (a RabbitMQ channel closed, a Kafka offset not committed, an SQS visibility
timeout, a Redis Streams pending entry claimed by another consumer): the jobs they make are
idempotent on their ids, so a redelivery costs nothing.

Each transport keeps its broker's promises:

- **RabbitMQ** (aio-pika): manual acks, ``prefetch`` as the in-flight bound, persistent
  messages and publisher confirms.
- **Kafka** (aiokafka): no auto-commit; an acknowledged offset is committed only when every
  earlier offset of its partition was acknowledged too (``offsets.py``), so a crash never skips
  a message; produced with ``acks=all``.
- **SQS** (aiobotocore), standard and FIFO: a message is deleted when acknowledged; the
  visibility timeout of each one held is extended while it is (a slow store, back-pressure).
- **Redis Streams** (redis.asyncio): a consumer group; ``XACK`` on acknowledgement; entries
  pending on a consumer that died are claimed after ``claim_idle_s`` (``XAUTOCLAIM``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Delivery:
    """One message as the broker handed it over: its id there (if any), its bytes, the
    broker's own correlation id and reply-to properties (RabbitMQ's, an SQS or Kafka
    header's), and the transport's handle to acknowledge it by."""

    broker_id: str | None
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    handle: Any = None
    correlation_id: str | None = None
    reply_to: str | None = None


@dataclass(frozen=True)
class Endpoints:
    """Where a transport connects and what it reads and writes.

    ``url``: the broker's URL (from the environment; for SQS the endpoint, None for AWS's
    own); ``source``: the queue, topic or stream read; ``group``: the consumer group (Kafka,
    Redis Streams); ``prefetch``: at most this many messages handed out and not acknowledged;
    ``declare``: create the source, reply and dead-letter destinations when missing (queues,
    topics, streams and groups); ``options``: the broker's own settings (for example SQS's
    ``region``, ``visibility_s``; Redis's ``claim_idle_s``)."""

    url: str | None
    source: str
    group: str = "noa"
    prefetch: int = 64
    declare: bool = True
    reply_to: str | None = None
    dead_letter: str | None = None
    consumer: str = "noa"  # this replica's name in the group (Redis Streams, Kafka client id)
    options: Mapping[str, Any] = field(default_factory=dict)


class Transport(Protocol):
    """One broker connection; see the module docstring."""

    kind: str  # "rabbitmq" | "kafka" | "sqs" | "redis"

    async def connect(self) -> None:
        """Open the connection (declaring what ``Endpoints.declare`` asks for)."""

    async def receive(self, max_messages: int, wait_s: float) -> list[Delivery]:
        """Up to ``max_messages`` messages, waiting at most about ``wait_s`` for the first;
        an empty list when none came. Raises when the broker is unreachable."""

    async def ack(self, delivery: Delivery) -> None:
        """``delivery`` is done with: the broker will not deliver it again."""

    async def publish(
        self, destination: str, body: bytes, *, message_id: str, correlation_id: str | None
    ) -> None:
        """Publish ``body`` to ``destination`` (a queue, topic or stream name) durably: when
        this returns the broker has it. ``message_id`` names it for receivers that dedupe (a
        result may be published twice after a crash)."""

    async def lag(self) -> int | None:
        """Messages waiting at the source (queue depth, consumer lag); None: unknown."""

    async def close(self) -> None:
        """Close the connection; messages not acknowledged are delivered again. Idempotent."""


class UndeliverableError(Exception):
    """``publish`` could not place a message although the broker is there (a destination that
    does not exist, a message it refuses): the message is retried later, the connection kept."""
