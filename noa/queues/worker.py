"""A queue bridge at work: one broker connection at a time, three loops over it, and a new
connection after a backoff whenever the broker goes away.

- **Consume**: at most ``concurrency`` messages held (received, not yet acknowledged); each is
  checked, waits while the job queue of its model is over ``max_queue_depth`` (the bridge
  stops pulling: every slot is then held by a waiting message), is stored as a job (retried
  with backoff while the database is away: the message stays held, never acknowledged before
  its job is durable) and acknowledged; poison goes to the dead letters (``Bridge.reject``).
- **Publish**: the bridge's rows of the reply outbox (``noa/jobs/replies.py``) claimed under
  a lease and published: a result to its reply destination, a dead job to the dead-letter
  destination. A failed publish is retried with a capped backoff (after ``publish_attempts``
  a row is given up and kept as ``failed``); a row is deleted only once the broker has it.
- **Lag**: the source's waiting messages measured every ``lag_every_s`` (the autoscaler's
  input, ``noa_bridge_lag``).

When the transport raises (the broker restarted, the network dropped), every loop stops, the
transport is closed (what it held and had not acknowledged is the broker's to deliver again;
those messages' jobs are idempotent, so a redelivery makes no second job or answer) and a new
connection is tried after ``backoff_s``, capped at ``reconnect_cap_s``. ``health`` says how
the bridge is doing (``/health/ready``, ``/status``, the dashboard).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from noa.access.coalescing import Coalescer
from noa.jobs.backoff import backoff_s
from noa.jobs.replies import DEAD_LETTER, Reply, ReplyOutbox
from noa.jobs.store import JobStore
from noa.observability.metrics import Metrics
from noa.queues.bridge import Bridge
from noa.queues.bridge_health import BridgeHealth
from noa.queues.envelope import Inbound, Poison, dead_job, result
from noa.queues.pacing import Clock, DepthGate, Sleep, sleep_or_stop
from noa.queues.transport import Delivery, Transport, UndeliverableError

logger = logging.getLogger("noa.queues.worker")
STORE_BATCH = 256  # messages stored in one transaction at most


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int = 64  # messages held at once
    max_queue_depth: int | None = None  # queued jobs of a model past which pulling stops
    receive_wait_s: float = 1.0
    depth_check_s: float = 0.5  # how long a depth count is trusted; the wait between checks
    reconnect_base_s: float = 0.5
    reconnect_cap_s: float = 30.0
    reply_lease_s: float = 30.0
    reply_batch: int = 64  # owed answers claimed at a time ...
    reply_window: int = 256  # ... and on their way to the broker at most (several batches)
    poll_min_s: float = 0.02  # the reply outbox is looked at this often while busy ...
    poll_max_s: float = 0.5  # ... and this often when idle
    busy_s: float = 10.0  # busy: a message was taken or a result published this recently
    publish_attempts: int = 50
    lag_every_s: float = 5.0


class BridgeWorker:
    """Runs one bridge (see the module docstring). ``connect`` makes a fresh transport;
    ``owner`` names this replica's leases on the reply outbox."""

    def __init__(
        self,
        bridge: Bridge,
        connect: Callable[[], Transport],
        outbox: ReplyOutbox,
        settings: WorkerSettings,
        *,
        owner: str,
        kind: str,
        metrics: Metrics | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.bridge = bridge
        self.connect = connect
        self.outbox = outbox
        self.settings = settings
        self.owner = owner
        self.metrics = metrics
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.health = BridgeHealth(bridge.settings.name, kind)
        self._wake = asyncio.Event()  # a job of this bridge was stored: look for replies soon
        self._busy_at = 0.0  # when a message was last taken or a result last published
        self._gate = DepthGate(
            bridge.store,
            settings.max_queue_depth,
            settings.depth_check_s,
            self.health,
            clock,
            sleep,
        )
        # messages checked meanwhile are stored together: one transaction for many
        self._stores: Coalescer[Inbound, bool] = Coalescer(self.bridge.submit_many, STORE_BATCH)

    @property
    def name(self) -> str:
        return self.bridge.settings.name

    @property
    def store(self) -> JobStore:
        return self.bridge.store

    # -- the connection ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, reconnecting after failures."""
        failures = 0
        while not stop.is_set():
            transport = self.connect()
            try:
                await transport.connect()
                self._up()
                failures = 0
                await self._serve(transport, stop)
            except Exception as e:  # any broker failure: reconnect
                self._down(e)
                failures += 1
            finally:
                with contextlib.suppress(Exception):
                    await transport.close()
                self.health.connected = False
                self._gauge("noa_bridge_connected", 0)
            if stop.is_set():
                break
            delay = backoff_s(
                min(failures, 30) - 1 if failures else 0,
                self.settings.reconnect_base_s,
                self.settings.reconnect_cap_s,
                rng=self.rng,
            )
            await sleep_or_stop(self.sleep, delay, stop)

    def _up(self) -> None:
        self.health.connected, self.health.since = True, self.clock()
        self._gauge("noa_bridge_connected", 1)
        logger.info("bridge %s: connected", self.name)

    def _down(self, error: BaseException) -> None:
        h = self.health
        h.last_error = f"{type(error).__name__}: {error}"[:500]
        h.reconnects += 1
        if h.connected or h.since is None:
            h.since = self.clock()
        logger.warning("bridge %s: broker connection lost: %s", self.name, h.last_error)

    async def _serve(self, transport: Transport, stop: asyncio.Event) -> None:
        """The loops over one connection, until one fails (raised) or ``stop``."""
        loops = [
            asyncio.create_task(self._consume(transport, stop), name=f"bridge-{self.name}-in"),
            asyncio.create_task(self._publish(transport, stop), name=f"bridge-{self.name}-out"),
            asyncio.create_task(self._measure(transport, stop), name=f"bridge-{self.name}-lag"),
        ]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    # -- consuming ---------------------------------------------------------------------------

    async def _consume(self, transport: Transport, stop: asyncio.Event) -> None:
        s = self.settings
        held: set[asyncio.Task[None]] = set()
        broken: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        try:
            while not stop.is_set():
                if broken.done():
                    raise broken.result()
                room = s.concurrency - len(held)
                if room <= 0:
                    await asyncio.wait(held, return_when=asyncio.FIRST_COMPLETED)
                    continue
                for delivery in await transport.receive(room, s.receive_wait_s):
                    task = asyncio.create_task(self._take(transport, delivery, stop, broken))
                    held.add(task)
                    task.add_done_callback(held.discard)
                self.health.in_flight = len(held)
                self._gauge("noa_bridge_in_flight", len(held))
        finally:
            for task in held:
                task.cancel()
            await asyncio.gather(*held, return_exceptions=True)
            self.health.in_flight = 0
            self._gauge("noa_bridge_in_flight", 0)

    async def _take(
        self,
        transport: Transport,
        delivery: Delivery,
        stop: asyncio.Event,
        broken: asyncio.Future[BaseException],
    ) -> None:
        try:
            try:
                inbound = self.bridge.check(delivery)
            except Poison as poison:
                await self.bridge.reject(transport, delivery, poison)
                self._count("noa_bridge_messages_total", (self.name, "dead_letter"))
                return
            model = inbound.body.get("model")
            if isinstance(model, str):
                await self._gate.room_for(model, stop)
            failures = 0
            while True:  # the message stays held until its job is durable
                try:
                    created = await self._stores(inbound)
                    break
                except Exception as e:  # the database away: wait and retry
                    failures += 1
                    self.health.last_error = f"storing a job: {type(e).__name__}: {e}"[:500]
                    logger.warning("bridge %s: %s", self.name, self.health.last_error)
                    delay = backoff_s(min(failures, 30) - 1, 0.2, 10.0, rng=self.rng)
                    if await sleep_or_stop(self.sleep, delay, stop):
                        return
            await transport.ack(delivery)
            self.health.taken += 1
            outcome = "stored" if created else "duplicate"
            self._count("noa_bridge_messages_total", (self.name, outcome))
            self._busy_at = self.clock()
            self._wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the broker failed the ack: reconnect
            if not broken.done():
                broken.set_result(e)

    # -- publishing --------------------------------------------------------------------------

    async def _publish(self, transport: Transport, stop: asyncio.Event) -> None:
        s = self.settings
        pause = s.poll_min_s
        window = max(s.reply_batch, s.reply_window)
        sending: dict[asyncio.Task[None], int] = {}  # a claimed batch on its way -> its size
        broken: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        try:
            while not stop.is_set():
                if broken.done():
                    raise broken.result()  # the broker is away: reconnect
                room = window - sum(sending.values())
                if room <= 0:  # the next batch is claimed while earlier ones await the broker
                    await asyncio.wait(sending, return_when=asyncio.FIRST_COMPLETED)
                    continue
                self._wake.clear()
                due = await self.outbox.next_due()  # a read: claims (writes) only when due
                replies = []
                if due is not None and due <= self.clock():
                    limit = min(s.reply_batch, room)
                    replies = await self.outbox.claim(self.owner, limit, s.reply_lease_s)
                if replies:
                    self._busy_at = self.clock()
                    task = asyncio.create_task(self._send_batch(transport, replies, broken))
                    sending[task] = len(replies)
                    task.add_done_callback(lambda done: sending.pop(done, None))
                    continue
                busy = self.clock() - self._busy_at < s.busy_s
                pause = s.poll_min_s if busy else min(s.poll_max_s, pause * 2)
                if due is not None:
                    pause = max(s.poll_min_s, min(pause, due - self.clock()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), pause)
        finally:
            for task in list(sending):
                task.cancel()
            await asyncio.gather(*sending, return_exceptions=True)

    async def _send_batch(
        self, transport: Transport, replies: list[Reply], broken: asyncio.Future[BaseException]
    ) -> None:
        """Publish claimed ``replies`` together and delete the rows of those the broker has; a
        failure of the broker (or the database) is put on ``broken`` for the loop to raise."""
        try:
            outcomes = await asyncio.gather(
                *(self._send(transport, r) for r in replies), return_exceptions=True
            )
            sent = [r for r, ok in zip(replies, outcomes, strict=True) if ok is True]
            await self.outbox.sent_many(sent, self.owner)
            failure = next((o for o in outcomes if isinstance(o, Exception)), None)
        except Exception as e:
            failure = e
        if failure is not None and not broken.done():
            broken.set_result(failure)
            self._wake.set()

    async def _send(self, transport: Transport, reply: Reply) -> bool:
        """Publish ``reply``'s message: True once the broker has it (its row is then the
        caller's to delete), False when it was refused and is due again later."""
        job, s = reply.job, self.bridge.settings
        message_id = str(job.metadata.get("noa_message_id") or job.id)
        correlation = job.metadata.get("noa_correlation_id")
        correlation_id = correlation if isinstance(correlation, str) else None
        if reply.kind == DEAD_LETTER:
            destination, body = s.dead_letter, dead_job(job, message_id, correlation_id)
        else:
            destination = reply.destination or s.reply_to or ""
            body = result(job, message_id, correlation_id)
        try:
            await transport.publish(
                destination, body, message_id=message_id, correlation_id=correlation_id
            )
        except Exception as e:
            await self._failed(reply, e)
            if not isinstance(e, UndeliverableError):
                raise
            return False
        self.health.published += 1
        self._count("noa_bridge_results_total", (self.name, reply.kind, "published"))
        if self.metrics is not None:
            seconds = max(0.0, self.clock() - job.created_at)
            self.metrics["noa_bridge_latency_seconds"].observe((self.name,), seconds)
        return True

    async def _failed(self, reply: Reply, error: Exception) -> None:
        text = f"{type(error).__name__}: {error}"
        with contextlib.suppress(Exception):  # the lease runs out otherwise: due again
            if reply.attempts >= self.settings.publish_attempts:
                logger.error("bridge %s: giving up on %s: %s", self.name, reply.id, text)
                await self.outbox.give_up(reply, self.owner, text)
                self._count("noa_bridge_results_total", (self.name, reply.kind, "failed"))
                return
            delay = backoff_s(min(reply.attempts, 30) - 1, 0.5, 60.0, rng=self.rng)
            await self.outbox.retry(reply, self.owner, delay, text)
            self._count("noa_bridge_results_total", (self.name, reply.kind, "retried"))

    # -- lag ---------------------------------------------------------------------------------

    async def _measure(self, transport: Transport, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.health.lag = await transport.lag()
            except Exception:  # unknown for now; the other loops see failures
                self.health.lag = None
            if self.health.lag is not None:
                self._gauge("noa_bridge_lag", self.health.lag)
            await sleep_or_stop(self.sleep, self.settings.lag_every_s, stop)

    # -- metrics -----------------------------------------------------------------------------

    def _count(self, name: str, labels: tuple[str, ...]) -> None:
        if self.metrics is not None:
            self.metrics[name].inc(labels)

    def _gauge(self, name: str, value: float) -> None:
        if self.metrics is not None:
            self.metrics[name].set((self.name,), float(value))
