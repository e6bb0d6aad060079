"""One line of a batch input file, as OpenAI's Batch API reads it:

    {"custom_id": "request-1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}

``parse_line`` gives a ``BatchLine`` (the body validated as the endpoint's request, exactly as
a job's is) or a ``LineError`` (OpenAI's ``code``, ``message``, ``param``, ``line``), never an
exception. Blank lines are the caller's to skip; that a ``custom_id`` is unique within the file
is the caller's to check (``duplicate_custom_id``), across the whole file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from noa.errors import NoaError
from noa.jobs.executor import job_request
from noa.jobs.model import dumps
from noa.wire.fields import storable

MAX_CUSTOM_ID = 512


@dataclass(frozen=True)
class BatchLine:
    line: int
    custom_id: str
    method: str
    url: str
    body: dict[str, Any]


@dataclass(frozen=True)
class LineError:
    code: str
    message: str
    param: str | None
    line: int
    custom_id: str | None = None

    def public(self) -> dict[str, Any]:
        """OpenAI's batch error object."""
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


def blank(text: str) -> bool:
    return not text.strip()


def too_long(line_no: int, max_chars: int) -> LineError:
    return LineError(
        "line_too_long", f"The line is longer than {max_chars} characters", None, line_no
    )


def duplicate(line: BatchLine, first: int) -> LineError:
    return LineError(
        "duplicate_custom_id",
        f"The custom_id {line.custom_id!r} is used by line {first} already: each request of a"
        " batch needs its own",
        "custom_id",
        line.line,
        line.custom_id,
    )


def parse_line(text: str, line_no: int, endpoint: str) -> BatchLine | LineError:
    """The request on line ``line_no`` of a batch for ``endpoint``, or why it is not one."""
    try:
        value = orjson.loads(text)
    except (orjson.JSONDecodeError, UnicodeEncodeError, TypeError, ValueError):
        return LineError(
            "invalid_json_line",
            "This line is not parseable as valid JSON.",
            None,
            line_no,
        )
    if not isinstance(value, dict):
        return LineError("invalid_json_line", "This line is not a JSON object.", None, line_no)
    custom_id = value.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return LineError(
            "missing_custom_id" if custom_id is None else "invalid_custom_id",
            "Each line needs a 'custom_id': a non-empty string",
            "custom_id",
            line_no,
        )
    if len(custom_id) > MAX_CUSTOM_ID or not storable(custom_id):
        return LineError(
            "invalid_custom_id",
            f"A 'custom_id' is at most {MAX_CUSTOM_ID} characters, none of them NUL",
            "custom_id",
            line_no,
        )
    method = value.get("method")
    if method != "POST":
        return LineError(
            "invalid_method", "The 'method' must be 'POST'.", "method", line_no, custom_id
        )
    url = value.get("url")
    if url != endpoint:
        return LineError(
            "invalid_url",
            f"The 'url' must be the batch's endpoint, {endpoint!r}.",
            "url",
            line_no,
            custom_id,
        )
    body = value.get("body")
    if not isinstance(body, dict):
        return LineError(
            "invalid_request", "The 'body' must be a JSON object.", "body", line_no, custom_id
        )
    try:
        _, request = job_request(endpoint, body)
        dumps(request)  # stored as JSON (as JobSpec checks): no integer beyond 64 bits,
        json.dumps(request, allow_nan=False)  # no NaN or infinity
    except NoaError as e:
        return LineError(
            e.code or "invalid_request", e.message, e.param or "body", line_no, custom_id
        )
    except (TypeError, ValueError, RecursionError) as e:
        return LineError("invalid_request", f"Invalid 'body': {e}", "body", line_no, custom_id)
    return BatchLine(line_no, custom_id, "POST", url, request)
