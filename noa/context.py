"""The request's correlation id: accepted from ``x-correlation-id`` or generated."""

from __future__ import annotations

import contextvars
import re
import uuid

CORRELATION_HEADER = "x-correlation-id"
_VALID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

correlation_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "noa_correlation_id", default=None
)


def accept_or_new(value: str | None) -> str:
    """The client's id when it is safe to echo and log; a fresh one otherwise."""
    if value and _VALID.match(value):
        return value
    return uuid.uuid4().hex


def current() -> str | None:
    return correlation_id_var.get()
