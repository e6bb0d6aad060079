"""What SQS messages look like to a bridge: a received message as a ``Delivery``, and a result
as a ``SendMessage`` entry (message attributes, FIFO group and deduplication ids)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from noa.queues.transport import Delivery, UndeliverableError

FIFO_ID = re.compile(r"^[A-Za-z0-9!-/:-@\[-`{-~]{1,128}$")  # alphanumerics and punctuation


@dataclass(frozen=True)
class Handle:
    """``Delivery.handle``: SQS's id of the message, where it is and its receipt handle."""

    sqs_id: str
    queue_url: str
    receipt: str


def send_entry(
    destination: str, body: bytes, message_id: str, correlation_id: str | None
) -> dict[str, Any]:
    """The ``SendMessage`` (batch entry) of a result: the body as UTF-8 text, the ``message_id``
    and ``correlation_id`` String attributes; to a FIFO queue also ``MessageGroupId`` (the
    correlation id, else the message id) and ``MessageDeduplicationId`` (the message id)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UndeliverableError(f"an SQS message body must be UTF-8 text: {err}") from err
    entry: dict[str, Any] = {
        "MessageBody": text,
        "MessageAttributes": {
            name: {"DataType": "String", "StringValue": value}
            for name, value in (("message_id", message_id), ("correlation_id", correlation_id))
            if value
        },
    }
    if destination.endswith(".fifo"):  # a FIFO queue's name (or URL)
        dedupe = message_id or hashlib.sha256(body).hexdigest()
        entry["MessageGroupId"] = fifo_id(correlation_id or dedupe)
        entry["MessageDeduplicationId"] = fifo_id(dedupe)
    return entry


def fifo_id(value: str) -> str:
    """``value`` as a FIFO group or deduplication id (its SHA-256 where SQS would refuse it)."""
    return value if FIFO_ID.match(value) else hashlib.sha256(value.encode()).hexdigest()


def delivery(message: Mapping[str, Any], handle: Handle) -> Delivery:
    attributes: dict[str, str] = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        if value.get("StringValue") is not None:
            attributes[name] = str(value["StringValue"])
        elif value.get("BinaryValue") is not None:
            attributes[name] = bytes(value["BinaryValue"]).decode("utf-8", errors="replace")
    system = message.get("Attributes") or {}
    headers = {**attributes, "sqs_message_id": handle.sqs_id}
    for key, name in (("sqs_receive_count", "ApproximateReceiveCount"),
                      ("sqs_group_id", "MessageGroupId")):  # fmt: skip
        if system.get(name) is not None:
            headers[key] = str(system[name])
    return Delivery(
        broker_id=attributes.get("message_id") or handle.sqs_id,
        body=str(message.get("Body", "")).encode("utf-8"),
        headers=headers,
        handle=handle,
        correlation_id=attributes.get("correlation_id") or None,
        reply_to=attributes.get("reply_to") or None,
    )
