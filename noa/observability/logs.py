"""Structured logging: one JSON object per line, with the request's correlation id; and the
masking of every record the process logs, whatever logger it comes from (Ray's, uvicorn's,
the SDKs' included), before any handler sees it."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from noa import context
from noa.observability.pii import mask, mask_value

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
                body[key] = value if key in _SAFE else mask_value(value)
        if record.exc_info:
            body["exception"] = mask(self.formatException(record.exc_info))
        return orjson.dumps(body, default=str).decode()


def _mask_text(record: logging.LogRecord) -> None:
    """Mask the message, its arguments (keeping their shape: uvicorn's access formatter unpacks
    them), and the exception and stack text of ``record``, in place."""
    record.msg = mask_value(record.msg)
    if record.args:
        record.args = mask_value(record.args)
    if isinstance(record.exc_text, str):
        record.exc_text = mask(record.exc_text)
    if isinstance(record.stack_info, str):
        record.stack_info = mask(record.stack_info)


def mask_record(record: logging.LogRecord) -> None:
    """Mask ``record`` in place: its text (``_mask_text``) and every extra field, strings nested
    in dicts and lists included (not NOA's identifier fields, nor other libraries' ``_`` ones)."""
    _mask_text(record)
    fields = record.__dict__
    for key, value in list(fields.items()):
        extra = key not in _STANDARD and key not in _SAFE and not key.startswith("_")
        if extra or key == "message":  # "message": the text a formatter already made
            fields[key] = mask_value(value)


class MaskingFilter(logging.Filter):
    """On a handler: each record it handles is masked (``mask_record``) before it is written;
    a record already masked by another handler's filter is not masked twice."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.__dict__.get("_noa_masked"):
            mask_record(record)
            record.__dict__["_noa_masked"] = True
        return True


class MaskingRecordFactory:
    """The process's log-record factory, wrapped: every record's message, arguments, exception
    and stack text are masked as it is made, whatever logger it comes from and whichever
    handler it goes to, handlers added later included. (Extra fields are set on a record after
    the factory made it: the ``MaskingFilter`` on the handlers masks those.)"""

    def __init__(self, make: Callable[..., logging.LogRecord]) -> None:
        self.make = make
        self._formatter = logging.Formatter()

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.make(*args, **kwargs)
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        _mask_text(record)
        return record


def install_masking(*handlers: logging.Handler) -> None:
    """Mask every record this process logs (idempotent): the record factory (text of every
    record), and a ``MaskingFilter`` (extra fields too) on ``handlers``, the root logger's, the
    last-resort handler and every handler of every logger configured so far: uvicorn's and Ray
    Serve's loggers have handlers of their own and do not propagate to the root."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, MaskingRecordFactory):
        logging.setLogRecordFactory(MaskingRecordFactory(factory))
    found = [*handlers, *logging.getLogger().handlers]
    if logging.lastResort is not None:
        found.append(logging.lastResort)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            found.extend(logger.handlers)
    for handler in found:
        if getattr(handler, "_noa", False):
            continue  # NOA's own: its JSON formatter masks every field of every line itself
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())


def configure_logging(level: int = logging.INFO) -> None:
    """Send the ``noa`` loggers to the process's stderr as JSON lines, and mask every record
    of the process, whatever its logger (``install_masking``). Idempotent; a second call also
    masks the handlers configured since the first.

    The real stderr (``sys.__stderr__``), not ``sys.stderr``: a Serve replica replaces the latter
    with a stream that re-logs every line through Serve's own logger, formatting it twice and
    holding it in a buffer of 1,000 records.
    """
    logger = logging.getLogger("noa")
    if not any(getattr(h, "_noa", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._noa = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    install_masking()
