"""A queue bridge's broker-independent core: each message a ``Transport`` hands over becomes a
durable job, and only then is it acknowledged.

``Bridge.take`` parses the message (``envelope.parse``), refuses what can never run (poison:
malformed, too large, an invalid request, a model NOA does not serve) by publishing it to the
dead-letter destination with its reason, and submits the rest as jobs of the bridge's key,
idempotent on ``bridge:<name>:<message id>``: a message the broker delivers again (after a
crash between the store and the ack, or a visibility timeout) finds its job already stored and
makes neither a second job nor a second answer. The broker is acknowledged after the job (or
the dead letter) is durable, never before: a bridge killed at any point loses nothing, and what
it had not acknowledged is delivered again. The worker (``worker.py``) calls the three steps
(``check``, ``submit``, then ``ack`` or ``reject``) itself, to wait for room between them.

The job carries where its answer goes (``noa_bridge``, ``noa_message_id``, ``noa_reply_to``,
``noa_correlation_id`` in its metadata: keys a producer may not set); ``noa/jobs/replies.py``
writes the answer owed when the job ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from noa.jobs.model import MASTER_KEY_ID, Job, JobSpec, Priority
from noa.jobs.store import JobStore
from noa.queues.envelope import Inbound, Poison, dead_letter, parse
from noa.queues.transport import Delivery, Transport

logger = logging.getLogger("noa.queues.bridge")
RESERVED_PREFIX = "noa_"


@dataclass(frozen=True)
class BridgeSettings:
    name: str
    key_id: str = MASTER_KEY_ID  # whose limits, budget and usage the jobs are
    team: str | None = None
    default_priority: Priority = Priority.MEDIUM
    default_model: str | None = None
    reply_to: str | None = None  # where results go when a message names no reply_to
    dead_letter: str = "noa-dead-letters"  # where poison and dead jobs go
    max_bytes: int = 1_048_576
    max_attempts: int = 3


class Bridge:
    """Messages in, jobs stored, messages acknowledged; see the module docstring."""

    def __init__(
        self,
        settings: BridgeSettings,
        store: JobStore,
        *,
        known_model: Callable[[str], bool] = lambda _: True,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.known_model = known_model
        self.notify = notify

    async def take(self, transport: Transport, delivery: Delivery) -> Job | None:
        """The job of ``delivery`` (stored now, or found: a redelivery), the broker then
        acknowledged; None when it was poison and went to the dead-letter destination."""
        try:
            inbound = self.check(delivery)
        except Poison as poison:
            await self.reject(transport, delivery, poison)
            return None
        job, _ = await self.submit(inbound)
        await transport.ack(delivery)  # the job is durable: the broker may forget it
        return job

    async def reject(self, transport: Transport, delivery: Delivery, poison: Poison) -> None:
        """``delivery`` to the dead-letter destination with its reason, then acknowledged."""
        message_id = poison.message_id or delivery.broker_id
        logger.warning(
            "bridge %s: message %s to the dead letters: %s (%s)",
            self.settings.name,
            message_id,
            poison.message,
            poison.code,
        )
        await transport.publish(
            self.settings.dead_letter,
            dead_letter(delivery.body, poison, delivery.broker_id),
            message_id=message_id or "unknown",
            correlation_id=delivery.correlation_id,
        )
        await transport.ack(delivery)

    async def submit(self, inbound: Inbound) -> tuple[Job, bool]:
        """The job of ``inbound``, stored (True) or found (False: a redelivery)."""
        job, created = await self.store.submit(self.spec(inbound))
        if created:
            self.notify()
        return job, created

    async def submit_many(self, inbounds: list[Inbound]) -> list[bool]:
        """The jobs of ``inbounds`` stored in one transaction: for each, whether it was made
        now (False: a redelivery, or a second copy in the same batch, found its job)."""
        specs = [self.spec(i) for i in inbounds]
        made = {j.idempotency_key for j in await self.store.submit_many(specs)}
        if made:
            self.notify()
        created: list[bool] = []
        for spec in specs:
            created.append(spec.idempotency_key in made)
            made.discard(spec.idempotency_key)
        return created

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
            raise Poison(
                "bad_envelope", f"metadata keys are reserved: {', '.join(reserved)}", inbound.id
            )
        model = inbound.body.get("model")
        if not isinstance(model, str) or not self.known_model(model):
            raise Poison("unknown_model", f"The model `{model}` does not exist", inbound.id)
        return Inbound(
            id=inbound.id,
            endpoint=inbound.endpoint,
            body=inbound.body,
            priority=inbound.priority,
            metadata=inbound.metadata,
            reply_to=inbound.reply_to or delivery.reply_to or s.reply_to,
            callback_url=inbound.callback_url,
            correlation_id=inbound.correlation_id or delivery.correlation_id,
        )

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
                "noa_reply_to": inbound.reply_to,
                "noa_correlation_id": inbound.correlation_id,
            },
            max_attempts=s.max_attempts,
            key_id=s.key_id,
            team=s.team,
            idempotency_key=f"bridge:{s.name}:{inbound.id}",
        )
