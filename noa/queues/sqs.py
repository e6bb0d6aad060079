"""Amazon SQS as a bridge's broker (aiobotocore), standard and FIFO queues.

What it promises:

- **Names are queue names** (source, reply-to, dead-letter, ``publish`` destinations),
  resolved once per connection (``GetQueueUrl``); a full ``https://`` queue URL is used as it
  is. With ``Endpoints.declare`` a missing queue is created (a name ending in ``.fifo``: FIFO,
  content-based deduplication off), an existing one used as it is; without, a missing source
  fails ``connect``.
- **At most ``prefetch`` held** (received, not acknowledged). ``receive`` is one
  ``ReceiveMessage`` of up to ``min(10, max_messages, free slots)``, long-polling
  ``round(wait_s)`` s (at most 20; the rest of a shorter wait is slept here, so small waits
  do not spin on the API), visibility timeout ``visibility_s`` (option, default 30). While
  held, a message's visibility is extended (``ChangeMessageVisibilityBatch``) every
  ``visibility_s / 3`` by a background task: a slow store does not hand it to another
  consumer. One received again while held here is not handed out twice (its newest receipt
  handle kept).
- ``ack`` deletes it (an entry of a ``DeleteMessageBatch``: see ``noa/queues/sqs_batch.py``);
  a receipt handle SQS no longer knows is logged, not raised (another consumer has it: the
  same job). ``close()`` stops extending: what was held is visible again when its timeout runs
  out, and delivered again with the same ids.
- ``Delivery.broker_id``: the ``message_id`` message attribute if the producer set one, else
  SQS's ``MessageId``; ``correlation_id`` / ``reply_to`` from the message attributes of those
  names; ``headers``: the string and number message attributes, plus ``sqs_message_id``,
  ``sqs_receive_count`` and (FIFO) ``sqs_group_id``.
- ``publish`` is an entry of a ``SendMessageBatch`` (durable once SQS answered it) with the
  String message attributes ``message_id`` and ``correlation_id``; to a FIFO queue also
  ``MessageGroupId`` (the correlation id, else the message id) and ``MessageDeduplicationId``
  (the message id), so a result published twice within SQS's 5-minute window is delivered
  once. An id SQS would refuse there (over 128 characters, or characters outside ASCII
  punctuation and alphanumerics) is replaced by its SHA-256. Deletes and sends made at the same
  moment share requests (up to ten entries each, ``BATCH_LANES`` requests on their way): a
  bridge makes up to ten times fewer requests than messages.
- ``lag()`` is the source's ``ApproximateNumberOfMessages`` (held messages not counted).

``Endpoints.url``: the endpoint (None: AWS's own); credentials: botocore's usual chain.
Options: ``region`` (else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, else ``us-east-1``),
``visibility_s``, ``connect_timeout_s`` (5), ``max_attempts`` (3, botocore's standard
retries), ``max_connections`` (64).

Errors: unreachable, closed, or a queue gone (a restarted local SQS lost it): ``BrokerGone``
(a ``ConnectionError``; the worker reconnects, ``connect`` declares again). ``publish`` to a
missing queue, or a message SQS refuses (too large, not UTF-8): ``UndeliverableError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from noa.queues.sqs_batch import Batcher, EntryFailed
from noa.queues.sqs_messages import Handle, delivery, send_entry
from noa.queues.transport import Delivery, Endpoints, UndeliverableError

logger = logging.getLogger("noa.queues.sqs")
T = TypeVar("T")
MAX_BATCH = 10  # SQS's most messages per receive or batch call
MAX_WAIT_S = 20  # SQS's longest long poll
BATCH_LANES = 8  # delete / send batch requests on their way at once
MISSING = {"QueueDoesNotExist", "NonExistentQueue"}  # (codes without the AWS.SimpleQueueService.)
STALE = {"ReceiptHandleIsInvalid", "InvalidReceiptHandle"}
REFUSED = {"InvalidMessageContents", "InvalidParameterValue", "InvalidAttributeValue"}
REFUSED |= {"InvalidAttributeName", "MessageTooLong", "UnsupportedOperation"}
REFUSED |= {"BatchRequestTooLong"}  # (a batch of one: that message alone is too large)


class BrokerGone(ConnectionError):
    """SQS could not be reached (or the transport is closed); the worker reconnects."""


class QueueMissing(BrokerGone):
    """A queue this transport uses does not exist (a restarted local SQS forgot it)."""


class _Link:
    """One connection's state: its client, the queue URLs resolved, the messages held."""

    def __init__(self, client: Any, stack: contextlib.AsyncExitStack) -> None:
        self.client = client
        self.stack = stack
        self.urls: dict[str, str] = {}
        self.held: dict[str, Handle] = {}  # by SQS MessageId: the newest receipt handle
        self.reserved = 0  # slots of receives under way
        self.closed = asyncio.Event()
        self.extender: asyncio.Task[None] | None = None
        self.deletes = Batcher(self._delete_batch, lanes=BATCH_LANES)
        self.sends = Batcher(self._send_batch, lanes=BATCH_LANES, split=_too_long)

    async def _delete_batch(self, url: str, entries: list[dict[str, Any]]) -> Any:
        with _errors(self):
            return await self.client.delete_message_batch(QueueUrl=url, Entries=entries)

    async def _send_batch(self, url: str, entries: list[dict[str, Any]]) -> Any:
        name = next((n for n, u in self.urls.items() if u == url), None)
        with _errors(self, name):
            return await self.client.send_message_batch(QueueUrl=url, Entries=entries)


class SqsTransport:
    kind = "sqs"

    def __init__(self, endpoints: Endpoints, *, session: AioSession | None = None) -> None:
        if endpoints.prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self.endpoints = endpoints
        options = endpoints.options
        env = os.environ
        region = options.get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        self.region = str(region or "us-east-1")
        self.visibility_s = max(1, min(43_200, round(float(options.get("visibility_s", 30)))))
        self.connect_timeout_s = float(options.get("connect_timeout_s", 5.0))
        self.max_attempts = int(options.get("max_attempts", 3))
        self.max_connections = int(options.get("max_connections", 64))
        self._session = session
        self._link: _Link | None = None

    # -- the connection ----------------------------------------------------------------------

    async def connect(self) -> None:
        await self.close()  # a second connect starts over
        e = self.endpoints
        self._session = self._session or get_session()
        config = AioConfig(
            connect_timeout=self.connect_timeout_s,
            read_timeout=MAX_WAIT_S + 10,
            retries={"mode": "standard", "max_attempts": self.max_attempts},
            max_pool_connections=self.max_connections,
        )
        stack = contextlib.AsyncExitStack()
        try:
            with _errors():
                client = await stack.enter_async_context(
                    self._session.create_client(
                        "sqs", region_name=self.region, endpoint_url=e.url or None, config=config
                    )
                )
                link = _Link(client, stack)
                wanted = (e.source, e.reply_to, e.dead_letter) if e.declare else ()
                for name in dict.fromkeys(n for n in wanted if n):
                    await self._declare(link, name)
                await self._url(link, e.source)  # a missing source (declare off) fails here
        except BaseException:
            with contextlib.suppress(Exception):
                await stack.aclose()
            raise
        link.extender = asyncio.create_task(self._extend(link), name=f"sqs-extend-{e.source}")
        self._link = link

    async def _declare(self, link: _Link, name: str) -> None:
        """Queue ``name`` as it is, or created when missing."""
        with contextlib.suppress(QueueMissing):
            await self._url(link, name)
            return
        attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "false"}
        answer = await link.client.create_queue(
            QueueName=name, Attributes=attributes if name.endswith(".fifo") else {}
        )
        link.urls[name] = str(answer["QueueUrl"])

    async def _url(self, link: _Link, name: str) -> str:
        if _is_url(name):
            return name
        url = link.urls.get(name)
        if url is None:
            with _errors(link, name):
                answer = await link.client.get_queue_url(QueueName=name)
            url = link.urls[name] = str(answer["QueueUrl"])
        return url

    def _live(self) -> _Link:
        link = self._link
        if link is None or link.closed.is_set():
            raise BrokerGone("the SQS transport is not connected")
        return link

    # -- consuming ---------------------------------------------------------------------------

    async def receive(self, max_messages: int, wait_s: float) -> list[Delivery]:
        link, e = self._live(), self.endpoints
        started = time.monotonic()
        room = min(MAX_BATCH, max_messages, e.prefetch - len(link.held) - link.reserved)
        if room <= 0:
            await _pause(link, wait_s)  # full: wait as a long poll would, not spin
            return []
        url = await self._url(link, e.source)
        link.reserved += room
        try:
            with _errors(link, e.source):
                answer = await _until_closed(
                    link,
                    link.client.receive_message(
                        QueueUrl=url,
                        MaxNumberOfMessages=room,
                        WaitTimeSeconds=max(0, min(MAX_WAIT_S, round(wait_s))),
                        VisibilityTimeout=self.visibility_s,
                        MessageAttributeNames=["All"],
                        MessageSystemAttributeNames=["All"],
                    ),
                )
        finally:
            link.reserved -= room
        out: list[Delivery] = []
        for message in answer.get("Messages") or []:
            handle = Handle(str(message["MessageId"]), url, str(message["ReceiptHandle"]))
            if handle.sqs_id not in link.held:  # (held already: only the new handle counts)
                out.append(delivery(message, handle))
            link.held[handle.sqs_id] = handle
        if not out:
            await _pause(link, wait_s - (time.monotonic() - started))
        return out

    async def ack(self, delivery: Delivery) -> None:
        link, handle = self._live(), delivery.handle
        if not isinstance(handle, Handle):
            raise ValueError("not a delivery of an SQS transport")
        newest = link.held.get(handle.sqs_id, handle)  # SQS deletes by the newest handle
        try:  # with the other deletes of the moment, in one request
            await link.deletes(newest.queue_url, {"ReceiptHandle": newest.receipt})
        except (ClientError, EntryFailed) as err:
            if _code(err) not in STALE:
                raise
            logger.info("sqs: message %s was no longer ours to delete: %s", handle.sqs_id, err)
        link.held.pop(handle.sqs_id, None)

    async def _extend(self, link: _Link) -> None:
        """Every ``visibility_s / 3``: the visibility of every held message extended."""
        every = self.visibility_s / 3
        due = time.monotonic() + every
        while not link.closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.closed.wait(), max(0.0, due - time.monotonic()))
                return
            due = time.monotonic() + every
            held = list(link.held.values())  # all of the source queue
            for start in range(0, len(held), MAX_BATCH):
                await self._extend_batch(link, held[start : start + MAX_BATCH])

    async def _extend_batch(self, link: _Link, held: list[Handle]) -> None:
        entries = [
            {"Id": str(i), "ReceiptHandle": h.receipt, "VisibilityTimeout": self.visibility_s}
            for i, h in enumerate(held)
        ]
        try:
            answer = await link.client.change_message_visibility_batch(
                QueueUrl=held[0].queue_url, Entries=entries
            )
        except Exception as err:  # the broker away: receive and ack will say so
            logger.warning("sqs: extending the visibility of held messages failed: %s", err)
            return
        for failed in answer.get("Failed") or []:  # acknowledged meanwhile, or lapsed
            logger.info("sqs: a held message's visibility was not extended: %s", failed)

    # -- publishing and lag ------------------------------------------------------------------

    async def publish(
        self, destination: str, body: bytes, *, message_id: str, correlation_id: str | None
    ) -> None:
        link = self._live()
        entry = send_entry(destination, body, message_id, correlation_id)
        try:
            url = await self._url(link, destination)
            await link.sends(url, entry)  # with the other sends of the moment, in one request
        except QueueMissing as err:
            raise UndeliverableError(f"no SQS queue {destination!r}") from err
        except ClientError as err:
            if _code(err) in REFUSED:
                raise UndeliverableError(f"SQS refused the message: {err}") from err
            raise
        except EntryFailed as err:
            if err.sender_fault or _code(err) in REFUSED:
                raise UndeliverableError(f"SQS refused the message: {err}") from err
            raise

    async def lag(self) -> int | None:
        link, e = self._live(), self.endpoints
        url = await self._url(link, e.source)
        with _errors(link, e.source):
            answer = await link.client.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
            )
        value = (answer.get("Attributes") or {}).get("ApproximateNumberOfMessages")
        return int(value) if value is not None else None

    @property
    def held(self) -> int:  # messages received and not yet acknowledged
        return len(self._link.held) if self._link is not None else 0

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is None:
            return
        link.closed.set()
        await link.deletes.close()  # not deleted: delivered again, to find its job
        await link.sends.close()  # not sent: still owed, sent again after the reconnect
        if link.extender is not None:
            link.extender.cancel()
            with contextlib.suppress(BaseException):
                await link.extender
        with contextlib.suppress(Exception):  # closing a broken connection
            await link.stack.aclose()


def _too_long(err: Exception) -> bool:
    """A batch SQS found over its payload limit (its entries then go one by one)."""
    return isinstance(err, ClientError) and _code(err) == "BatchRequestTooLong"


def _is_url(name: str) -> bool:
    return name.startswith(("https://", "http://"))


def _code(err: ClientError | EntryFailed) -> str:
    """The error's code, without the ``AWS.SimpleQueueService.`` some codes come with."""
    if isinstance(err, EntryFailed):
        code = err.code
    else:
        code = str(err.response.get("Error", {}).get("Code", ""))
    return code.removeprefix("AWS.SimpleQueueService.")


@contextlib.contextmanager
def _errors(link: _Link | None = None, queue: str | None = None) -> Iterator[None]:
    """botocore's failures as the transport's: unreachable -> ``BrokerGone``, a missing
    queue -> ``QueueMissing`` (its URL forgotten, to be resolved again)."""
    try:
        yield
    except BrokerGone:  # (a ConnectionError, so an OSError: already the transport's)
        raise
    except ClientError as err:
        if _code(err) in MISSING:
            if link is not None and queue is not None:
                link.urls.pop(queue, None)
            raise QueueMissing(f"no SQS queue {queue!r}: {err}") from err
        raise
    except (BotoCoreError, OSError) as err:
        raise BrokerGone(f"SQS unreachable: {type(err).__name__}: {err}") from err


async def _until_closed(link: _Link, call: Awaitable[T]) -> T:
    """``call``'s answer; ``BrokerGone`` as soon as ``link`` is closed (a long poll cut)."""
    task = asyncio.ensure_future(call)
    closed = asyncio.ensure_future(link.closed.wait())
    try:
        await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closed.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if link.closed.is_set() and (task.cancelled() or task.exception() is not None):
        raise BrokerGone("the SQS transport was closed")
    return task.result()


async def _pause(link: _Link, delay_s: float) -> None:
    """Wait ``delay_s``; ``BrokerGone`` if the transport is closed meanwhile."""
    if delay_s > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(link.closed.wait(), delay_s)
    if link.closed.is_set():
        raise BrokerGone("the SQS transport was closed")
