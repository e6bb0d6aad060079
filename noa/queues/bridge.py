"""A queue bridge's broker-independent core: each message a ``Transport`` hands over becomes a
durable job, and only then is it acknowledged.

``Bridge.take`` parses the message (``envelope.parse``), refuses what can never run (poison:
malformed, too large, an invalid request, a model NOA does not serve) by sending it to the
dead-letter destination with its reason, and submits the rest as jobs of the bridge's key,
idempotent on ``bridge:<name>:<message id>``: a message the broker delivers again (after a
crash between the store and the ack, or a visibility timeout) finds its job already stored and
makes neither a second job nor a second answer. The broker is acknowledged after the job (or
the dead letter) is durable, never before: a bridge killed at any point loses nothing, and what
it had not acknowledged is delivered again.

The job carries where its answer goes (``noa_bridge``, ``noa_message_id``, ``noa_reply_to``,
``noa_correlation_id`` in its metadata: keys a producer may not set).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from noa.jobs.model import MASTER_KEY_ID, Job, JobSpec, Priority
from noa.jobs.store import JobStore
from noa.queues.envelope import Inbound, Poison, dead_letter, parse

logger = logging.getLogger("noa.queues.bridge")
RESERVED_PREFIX = "noa_"


@dataclass(frozen=True)
class Delivery:
    """One message as the broker handed it over: its id there (if any), its bytes and
    headers, and the transport's own handle to acknowledge it by."""

    broker_id: str | None
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    handle: Any = None


class Transport(Protocol):
    """One broker connection: what a bridge needs of it."""

    async def ack(self, delivery: Delivery) -> None:
        """The message is done with: the broker will not deliver it again."""

    async def dead_letter(self, delivery: Delivery, body: bytes) -> None:
        """Publish ``body`` (the reason and the original) to the dead-letter destination,
        then acknowledge ``delivery``."""


@dataclass(frozen=True)
class BridgeSettings:
    name: str
    key_id: str = MASTER_KEY_ID  # whose limits, budget and usage the jobs are
    team: str | None = None
    default_priority: Priority = Priority.MEDIUM
    default_model: str | None = None
    reply_to: str | None = None  # where results go when a message names no reply_to
    max_bytes: int = 1_048_576
    max_attempts: int = 3


class Bridge:
    """Messages in, jobs stored, messages acknowledged; see the module docstring."""

    def __init__(
        self,
        settings: BridgeSettings,
        transport: Transport,
        store: JobStore,
        *,
        known_model: Callable[[str], bool] = lambda _: True,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.store = store
        self.known_model = known_model
        self.notify = notify

    async def take(self, delivery: Delivery) -> Job | None:
        """The job of ``delivery`` (stored now, or found: a redelivery), the broker then
        acknowledged; None when it was poison and went to the dead-letter destination."""
        try:
            inbound = self.check(delivery)
        except Poison as poison:
            logger.warning(
                "bridge %s: message %s to the dead letters: %s (%s)",
                self.settings.name,
                delivery.broker_id,
                poison.message,
                poison.code,
            )
            await self.transport.dead_letter(
                delivery, dead_letter(delivery.body, poison, delivery.broker_id)
            )
            return None
        job, created = await self.store.submit(self.spec(inbound))
        await self.transport.ack(delivery)  # the job is durable: the broker may forget it
        if created:
            self.notify()
        return job

    def check(self, delivery: Delivery) -> Inbound:
        """The message's request; ``Poison`` when it can never run here."""
        s = self.settings
        inbound = parse(
            delivery.body,
            delivery.broker_id,
            max_bytes=s.max_bytes,
            default_priority=s.default_priority,
            default_model=s.default_model,
        )
        reserved = sorted(k for k in inbound.metadata if k.startswith(RESERVED_PREFIX))
        if reserved:
            raise Poison("bad_envelope", f"metadata keys are reserved: {', '.join(reserved)}")
        model = inbound.body.get("model")
        if not isinstance(model, str) or not self.known_model(model):
            raise Poison("unknown_model", f"The model `{model}` does not exist")
        return inbound

    def spec(self, inbound: Inbound) -> JobSpec:
        s = self.settings
        return JobSpec(
            endpoint=inbound.endpoint,
            body=inbound.body,
            priority=inbound.priority,
            callback_url=inbound.callback_url,
            metadata={
                **inbound.metadata,
                "noa_bridge": s.name,
                "noa_message_id": inbound.id,
                "noa_reply_to": inbound.reply_to or s.reply_to,
                "noa_correlation_id": inbound.correlation_id,
            },
            max_attempts=s.max_attempts,
            key_id=s.key_id,
            team=s.team,
            idempotency_key=f"bridge:{s.name}:{inbound.id}",
        )
