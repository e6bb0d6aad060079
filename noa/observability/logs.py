"""Structured logging: one JSON object per line, with the request's correlation id."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from noa import context
from noa.observability.pii import mask

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


# Fields NOA itself fills with identifiers, never with what a caller typed: not scanned.
_SAFE = {"correlation_id", "method", "route", "provider", "model", "cache", "attempts", "event"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "correlation_id", ...extra fields}``; every
    free-text field goes through ``noa.observability.pii.mask``."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        cid = getattr(record, "correlation_id", None) or context.current()
        if cid:
            body["correlation_id"] = cid
        for key, value in record.__dict__.items():
            # fields starting with "_" are other libraries' internals (Ray's ``_ray_timestamp_ns``)
            if key not in _STANDARD and key not in body and not key.startswith("_"):
                body[key] = mask(value) if isinstance(value, str) and key not in _SAFE else value
        if record.exc_info:
            body["exception"] = mask(self.formatException(record.exc_info))
        return orjson.dumps(body, default=str).decode()


def configure_logging(level: int = logging.INFO) -> None:
    """Send the ``noa`` loggers to the process's stderr as JSON lines (idempotent).

    The real stderr (``sys.__stderr__``), not ``sys.stderr``: a Serve replica replaces the latter
    with a stream that re-logs every line through Serve's own logger, formatting it twice and
    holding it in a buffer of 1,000 records.
    """
    logger = logging.getLogger("noa")
    if any(getattr(h, "_noa", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._noa = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
