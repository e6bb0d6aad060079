"""What a job is: its states, priorities, the spec a submit carries, and a stored job.

A job is ``queued`` until a runner claims it (``running``, under a lease and a fencing token),
then ``completed`` (its ``result`` is the body the synchronous endpoint returns), ``failed`` (a
client error, never retried), ``dead`` (its attempts spent; every attempt's reason is kept) or
``cancelled``. A retryable failure puts it back to ``queued`` at a later ``run_at``; an expired
lease puts it back at once (or makes it ``dead`` when that was its last attempt).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import orjson

ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
MAX_ATTEMPTS = 20
MASTER_KEY_ID = ""  # the master key's jobs: a key id all the same, so idempotency holds


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED)


class Priority(IntEnum):
    """Lower runs first."""

    HIGH = 0
    MEDIUM = 1
    LOW = 2

    @classmethod
    def of(cls, value: Priority | int | str) -> Priority:
        """A priority from its name (``"high"``) or number (``0``)."""
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                raise ValueError(f"priority must be one of high, medium, low: {value!r}") from None
        return cls(value)

    @property
    def label(self) -> str:
        return self.name.lower()


def error_body(error: Mapping[str, Any] | str, code: str | None = None) -> dict[str, Any]:
    """An OpenAI error object (``message``, ``type``, ``param``, ``code``); a bare message is a
    ``server_error``."""
    if isinstance(error, str):
        return {"message": error, "type": "server_error", "param": None, "code": code}
    return dict(error)


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


def loads(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


@dataclass(frozen=True)
class JobSpec:
    """What a submit carries. ``key_id`` is the submitting key (``""``: the master key);
    ``run_at`` None runs it now; ``parent_id`` names its batch; ``schedule_id`` and ``due_at``
    name the schedule's due time that made it (one job per due time)."""

    endpoint: str
    body: Mapping[str, Any]
    priority: Priority = Priority.MEDIUM
    callback_url: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    run_at: float | None = None
    max_attempts: int = 3
    key_id: str = MASTER_KEY_ID
    team: str | None = None
    idempotency_key: str | None = None
    parent_id: str | None = None
    schedule_id: str | None = None
    due_at: float | None = None
    traceparent: str | None = None  # the submitting request's span (W3C), when traced

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {', '.join(sorted(ENDPOINTS))}")
        object.__setattr__(self, "priority", Priority.of(self.priority))
        if isinstance(self.max_attempts, bool) or not 1 <= self.max_attempts <= MAX_ATTEMPTS:
            raise ValueError(f"max_attempts must be between 1 and {MAX_ATTEMPTS}")
        for name in ("run_at", "due_at"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number")
        if (self.schedule_id is None) != (self.due_at is None):
            raise ValueError("schedule_id and due_at go together")
        for name in ("body", "metadata"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise ValueError(f"{name} must be an object")
            try:  # orjson refuses integers beyond 64 bits, json refuses NaN and infinities
                dumps(dict(value))
                json.dumps(dict(value), allow_nan=False)
            except (TypeError, ValueError) as e:  # orjson.JSONEncodeError is a TypeError
                raise ValueError(f"{name} cannot be stored as JSON: {e}") from None


@dataclass(frozen=True)
class Job:
    """A stored job, as its row reads."""

    id: str
    key_id: str
    team: str | None
    endpoint: str
    body: dict[str, Any]
    priority: Priority
    status: JobStatus
    run_at: float
    created_at: float
    updated_at: float
    attempts: int
    max_attempts: int
    token: int
    started_at: float | None = None
    finished_at: float | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    idempotency_key: str | None = None
    callback_url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    parent_id: str | None = None
    schedule_id: str | None = None
    due_at: float | None = None
    traceparent: str | None = None

    @property
    def model(self) -> str | None:
        """The model the job's request names (kept in its own column: a queue bridge's
        back-pressure counts the queued jobs of a model)."""
        model = self.body.get("model")
        return model if isinstance(model, str) else None

    def public(self) -> dict[str, Any]:
        """What the job API returns."""
        return {
            "id": self.id,
            "object": "job",
            "status": self.status.value,
            "endpoint": self.endpoint,
            "priority": self.priority.label,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "run_at": self.run_at,
            "metadata": self.metadata,
            "result": self.result,
            "error": self.error,
            "callback_url": self.callback_url,
        }


@dataclass(frozen=True)
class Attempt:
    """One claim of a job: who ran it under which token, and how it ended (``outcome`` None
    while it runs: ``completed``, ``retried``, ``failed``, ``dead``, ``lease_expired``,
    ``cancelled``)."""

    job_id: str
    attempt: int
    token: int
    owner: str | None
    started_at: float
    finished_at: float | None = None
    outcome: str | None = None
    error: dict[str, Any] | None = None

    def public(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "owner": self.owner,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "outcome": self.outcome,
            "error": self.error,
        }


@dataclass(frozen=True)
class Claim:
    """A job a runner now holds, and the fencing token its writes must carry."""

    job: Job
    token: int
