"""The outside view of a real broker for the bridge tests: what a producer and a result
consumer of NOA's users do (put request messages on the source, read what NOA published to a
reply or dead-letter destination), and a private broker that a test may restart.

One ``BrokerProbe`` per broker lives in ``broker_<kind>.py``; ``probe(kind)`` makes the one
on the suite's shared broker, ``private(kind, tmp)`` starts a broker of the test's own (on a
free loopback port, stopped at the end) that ``restart()`` stops and starts again."""

from __future__ import annotations

import importlib
import os
import uuid
from pathlib import Path
from typing import Protocol

import pytest

from noa.queues.transport import Endpoints, Transport

KINDS = ("rabbitmq", "kafka", "sqs", "redis")
ENV = {
    "rabbitmq": "NOA_TEST_RABBITMQ_URL",
    "kafka": "NOA_TEST_KAFKA_BOOTSTRAP",
    "sqs": "NOA_TEST_SQS_ENDPOINT",
    "redis": "NOA_TEST_REDIS_URL",
}


class BrokerProbe(Protocol):
    kind: str
    url: str

    def endpoints(
        self, source: str, reply_to: str, dead_letter: str, consumer: str = "noa-1"
    ) -> Endpoints:
        """The bridge's endpoints on this broker (declare on, a short SQS visibility, a
        short Redis claim idle time, so redeliveries come within seconds)."""

    def transport(self, endpoints: Endpoints) -> Transport:
        """NOA's transport for ``endpoints``."""

    async def create(self, *names: str) -> None:
        """Make sure these queues / topics / streams exist (before sending to them)."""

    async def send(self, destination: str, body: bytes, message_id: str | None = None) -> None:
        """Put a message on ``destination`` as a producer would."""

    async def read(self, destination: str, n: int, timeout_s: float) -> list[bytes]:
        """What is on ``destination`` (consumed as an outside reader does: acknowledged),
        once ``n`` messages came or ``timeout_s`` passed; extra messages already there are
        returned too (duplicates are the caller's to count)."""

    async def restart(self) -> None:
        """Stop the broker and start it again on the same port (private brokers only)."""

    async def stop(self) -> None:
        """Stop a private broker: its port refuses until ``start()``."""

    async def start(self) -> None:
        """Start a stopped private broker again on the same port."""

    async def close(self) -> None:
        """Close the probe's own connections; a private broker is stopped."""


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def url_of(kind: str) -> str:
    value = os.environ.get(ENV[kind])
    if not value:
        pytest.fail(f"{ENV[kind]} is not set: run the suite through ./scripts/test.sh")
    return value


def probe(kind: str) -> BrokerProbe:
    """The probe of the suite's shared broker of ``kind``."""
    module = importlib.import_module(f"broker_{kind}")
    made: BrokerProbe = module.Probe(url_of(kind))
    return made


async def private(kind: str, tmp: Path) -> BrokerProbe:
    """A broker of ``kind`` of this test's own, in ``tmp``, that ``restart()`` may restart."""
    module = importlib.import_module(f"broker_{kind}")
    made: BrokerProbe = await module.private(tmp)
    return made
