"""The message formats of NOA's queue bridges: what a producer puts on a broker, what NOA
publishes back, and what it sends to the dead-letter destination.

A request message is one JSON object (UTF-8, at most ``max_bytes``)::

    {"id": "doc-42",                          # optional: the broker's message id otherwise
     "endpoint": "/v1/chat/completions",      # optional: chat by default
     "body": {"model": "smollm2", "messages": [...]},   # the request, as over HTTP
     "priority": "high" | "medium" | "low",   # optional: the bridge's default
     "metadata": {...},                        # optional: returned with the result
     "reply_to": "results-queue",             # optional: the bridge's reply destination
     "callback_url": "https://...",           # optional: a signed webhook as well
     "correlation_id": "..."}                  # optional: echoed in the result

The id (the envelope's, else the broker's) names the message for good: a redelivered message
becomes the same job, so it is answered once. A result message::

    {"id": "doc-42", "correlation_id": "...", "job_id": "job_...",
     "status": "completed" | "failed" | "dead" | "cancelled",
     "result": {...the synchronous endpoint's body...} | "error": {...its error object...},
     "metadata": {...}}

A message that cannot become a job (``Poison``: not JSON, not an object, too large, a field of
the wrong type, an invalid request) goes to the dead-letter destination as ``dead_letter``
describes it: the reason's code and message, and the original message as text::

    {"id": "doc-42", "reason": {"code": "bad_json", "message": "..."},
     "original": "...the message as it came...", "truncated": false}

A job that dies after its retries is published to the dead-letter destination as well (and its
result message, ``status: "dead"``, to the reply destination): ``dead_job``'s message is the
result message plus ``reason`` (``job_dead``) and ``request`` (its endpoint and body).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from noa.errors import NoaError
from noa.jobs.executor import job_request
from noa.jobs.model import Job, Priority

ID = re.compile(r"^[A-Za-z0-9._:\-/]{1,200}$")
FIELDS = frozenset(
    {"id", "endpoint", "body", "priority", "metadata", "reply_to", "callback_url", "correlation_id"}
)
DEFAULT_ENDPOINT = "/v1/chat/completions"
MAX_METADATA_BYTES = 16_384
MAX_ORIGINAL_CHARS = 65_536  # of the original message kept in a dead letter


class Poison(Exception):
    """A message that can never become a job: its ``code`` and a message saying why."""

    def __init__(self, code: str, message: str, message_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.message_id = message_id  # the envelope's id, when it was read before the fault


@dataclass(frozen=True)
class Inbound:
    """A request message, checked: everything a job needs."""

    id: str
    endpoint: str
    body: dict[str, Any]
    priority: Priority
    metadata: dict[str, Any] = field(default_factory=dict)
    reply_to: str | None = None
    callback_url: str | None = None
    correlation_id: str | None = None


def parse(
    raw: bytes,
    broker_id: str | None = None,
    *,
    max_bytes: int = 1_048_576,
    default_priority: Priority = Priority.MEDIUM,
    default_model: str | None = None,
) -> Inbound:
    """The request in ``raw``; ``Poison`` when there is none. ``broker_id`` names a message
    whose envelope has no id; ``default_model`` fills a body that names no model."""
    if len(raw) > max_bytes:
        raise Poison("too_large", f"the message is {len(raw)} bytes, over {max_bytes}")
    try:
        envelope = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise Poison("bad_json", f"the message is not JSON: {e}") from None
    if not isinstance(envelope, dict):
        raise Poison("bad_envelope", "the message is not a JSON object")
    unknown = sorted(set(envelope) - FIELDS)
    if unknown:
        raise Poison("bad_envelope", f"unknown fields: {', '.join(unknown)}")
    message_id = envelope.get("id", broker_id)
    if not isinstance(message_id, str) or not ID.match(message_id):
        raise Poison("bad_envelope", "'id' must be 1-200 characters of [A-Za-z0-9._:-/]")
    try:
        return _checked(envelope, message_id, default_priority, default_model)
    except Poison as poison:
        poison.message_id = message_id
        raise


def _checked(
    envelope: dict[str, Any],
    message_id: str,
    default_priority: Priority,
    default_model: str | None,
) -> Inbound:
    body = envelope.get("body")
    if not isinstance(body, dict):
        raise Poison("bad_envelope", "'body' must be a JSON object: the request")
    if default_model is not None and "model" not in body:
        body = {**body, "model": default_model}
    endpoint = envelope.get("endpoint", DEFAULT_ENDPOINT)
    if not isinstance(endpoint, str):
        raise Poison("bad_envelope", "'endpoint' must be a string")
    try:
        _, request = job_request(endpoint, body)
    except NoaError as e:
        raise Poison(e.code or "invalid_request", e.message) from None
    metadata = envelope.get("metadata", {})
    if not isinstance(metadata, dict) or len(orjson.dumps(metadata)) > MAX_METADATA_BYTES:
        raise Poison(
            "bad_envelope", f"'metadata' must be an object of at most {MAX_METADATA_BYTES} bytes"
        )
    texts = {}
    for name in ("reply_to", "callback_url", "correlation_id"):
        value = envelope.get(name)
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 2048):
            raise Poison("bad_envelope", f"'{name}' must be a string of at most 2048 characters")
        texts[name] = value
    named = envelope.get("priority", default_priority)
    try:
        if isinstance(named, bool) or not isinstance(named, str | int):
            raise TypeError(named)
        priority = Priority.of(named)
    except (ValueError, KeyError, TypeError):
        raise Poison("bad_envelope", "'priority' must be one of high, medium, low") from None
    return Inbound(
        id=message_id,
        endpoint=endpoint,
        body=request,
        priority=priority,
        metadata=metadata,
        reply_to=texts["reply_to"],
        callback_url=texts["callback_url"],
        correlation_id=texts["correlation_id"],
    )


def result(job: Job, message_id: str, correlation_id: str | None = None) -> bytes:
    """The result message of a final job."""
    out: dict[str, Any] = {
        "id": message_id,
        "correlation_id": correlation_id,
        "job_id": job.id,
        "status": job.status.value,
    }
    if job.result is not None:
        out["result"] = job.result
    if job.error is not None:
        out["error"] = job.error
    out["metadata"] = _user_metadata(job.metadata)
    return orjson.dumps(out)


def dead_letter(raw: bytes, poison: Poison, broker_id: str | None = None) -> bytes:
    """The dead-letter message of one that cannot become a job."""
    text = raw.decode("utf-8", errors="replace")
    return orjson.dumps(
        {
            "id": poison.message_id or broker_id,
            "reason": {"code": poison.code, "message": poison.message},
            "original": text[:MAX_ORIGINAL_CHARS],
            "truncated": len(text) > MAX_ORIGINAL_CHARS,
        }
    )


def dead_job(job: Job, message_id: str, correlation_id: str | None = None) -> bytes:
    """The dead-letter message of a job that died after its retries: the result message's
    fields, the reason (``job_dead`` and the last error's message) and the request as it was
    submitted (its endpoint and body), to inspect or send again."""
    error = job.error or {}
    message = error.get("message") if isinstance(error, dict) else None
    out = orjson.loads(result(job, message_id, correlation_id))
    out["reason"] = {
        "code": "job_dead",
        "message": f"the job died after {job.attempts} attempt(s): {message or 'no error text'}",
    }
    out["request"] = {"endpoint": job.endpoint, "body": job.body}
    return orjson.dumps(out)


def _user_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The producer's metadata, without the bridge's own keys (``noa_*``)."""
    return {k: v for k, v in metadata.items() if not k.startswith("noa_")}
