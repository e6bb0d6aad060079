"""The durable webhook outbox: a delivery is written in the transaction that makes its subject
final (a job completed, failed, dead or cancelled; a batch ended), and sent later by a sweep.

``enqueue`` inserts one row of ``noa_webhook_deliveries``, its payload (the JSON body sent)
built now; ``(kind, subject_id, version, event_type)`` is unique, so settling the same claim
twice makes one event, and a redriven job that finishes again (a new fencing token: a new
``version``) makes a new one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from noa.jobs.model import dumps
from noa.storage.db import Database

INSERT = """
INSERT INTO noa_webhook_deliveries (
    id, kind, subject_id, version, url, event_type, payload, status, attempts, next_at,
    created_at, updated_at
) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8, $8)
ON CONFLICT DO NOTHING
"""


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex[:24]}"


def event_payload(
    event_id: str, event_type: str, data: Mapping[str, Any], now: float
) -> dict[str, Any]:
    """The body a receiver gets: an OpenAI-style event object."""
    return {
        "id": event_id,
        "object": "event",
        "created_at": int(now),
        "type": event_type,
        "data": dict(data),
    }


async def enqueue(
    tx: Database,
    *,
    kind: str,
    subject_id: str,
    url: str,
    event_type: str,
    data: Mapping[str, Any],
    now: float,
    version: int = 0,
) -> None:
    """Add a pending delivery (due now) in ``tx``, the transaction that makes the subject
    final; nothing when that event of that version of the subject is there already."""
    event_id = new_event_id()
    payload = dumps(event_payload(event_id, event_type, data, now))
    await tx.execute(INSERT, event_id, kind, subject_id, version, url, event_type, payload, now)
