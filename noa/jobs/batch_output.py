"""A batch's output and error files, line by line, as OpenAI writes them:

    {"id": "batch_req_...", "custom_id": "...", "response": {"status_code": 200,
     "request_id": "<job id>", "body": {...}}, "error": null}

one per completed request in the output file; in the error file, one per failed (or dead)
request (``response`` with the error's status and ``{"error": ...}`` as its body), per request
cancelled or expired (``response`` null, ``error`` ``batch_cancelled`` or ``batch_expired``)
and per invalid input line (``response`` null, ``error`` the line's). Both are read from the
database in keyset pages in line order: a batch of any size is never held in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

from noa.errors import ALL_ERRORS
from noa.jobs import batch_sql as sql
from noa.jobs.batch_sql import Batch, BatchStatus
from noa.jobs.model import dumps, loads
from noa.storage.db import Database, Row

PAGE = 500
Extend = Callable[[], Awaitable[None]]

# an error object's HTTP status: by (type, code) first, then by type (the first class of it)
_BY_TYPE_CODE = MappingProxyType(
    {(c.error_type, c.default_code): c.status_code for c in ALL_ERRORS}
)
_BY_TYPE = MappingProxyType(
    {c.error_type: c.status_code for c in reversed(ALL_ERRORS)}  # the first class wins
)
ENDED = MappingProxyType(
    {
        BatchStatus.CANCELLED: (
            "batch_cancelled",
            "This request was not executed: the batch was cancelled.",
        ),
        BatchStatus.EXPIRED: (
            "batch_expired",
            "This request could not be executed before the completion window expired.",
        ),
    }
)


def status_of(error: Mapping[str, Any]) -> int:
    """The HTTP status the synchronous endpoint would have answered with ``error``."""
    kind, code = error.get("type"), error.get("code")
    found = _BY_TYPE_CODE.get((kind, code)) or _BY_TYPE.get(kind)  # type: ignore[arg-type]
    return int(found) if found is not None else 500


def request_id(job_id: str | None, batch_id: str, line: int) -> str:
    """A request's ``batch_req_`` id: its job's (the same however often the file is written),
    or for an invalid line one made of the batch and the line."""
    if job_id is not None:
        return f"batch_req_{job_id.removeprefix('job_')}"
    return f"batch_req_{hashlib.sha256(f'{batch_id}:{line}'.encode()).hexdigest()[:24]}"


def output_line(b: Batch, row: Row) -> str:
    return dumps(
        {
            "id": request_id(row["job_id"], b.id, row["line"]),
            "custom_id": row["custom_id"],
            "response": {
                "status_code": 200,
                "request_id": row["job_id"],
                "body": loads(row["result"]),
            },
            "error": None,
        }
    )


def error_line(b: Batch, row: Row, ended: BatchStatus) -> str:
    job_id, status = row["job_id"], row["status"]
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    if job_id is None:  # an invalid line
        error = {"code": row["code"], "message": row["message"], "line": row["line"]}
    elif status in ("failed", "dead") and (found := loads(row["error"])):
        response = {
            "status_code": status_of(found),
            "request_id": job_id,
            "body": {"error": found},
        }
    else:  # cancelled (or never run) when the batch ended
        code, message = ENDED.get(ended, ENDED[BatchStatus.CANCELLED])
        error = {"code": code, "message": message}
    return dumps(
        {
            "id": request_id(job_id, b.id, row["line"]),
            "custom_id": row["custom_id"],
            "response": response,
            "error": error,
        }
    )


async def pages(
    db: Database, query: str, b: Batch, extend: Extend, page: int = PAGE
) -> AsyncIterator[Row]:
    """The rows of ``query`` (an ``OUTPUT_PAGE`` or ``ERROR_PAGE``) page by page, after line
    numbers; ``extend`` keeps the batch's lease before each page."""
    after = 0
    while True:
        await extend()
        rows = await db.fetch(query, b.id, b.key_id, after, page)
        for row in rows:
            yield row
        if len(rows) < page:
            return
        after = int(rows[-1]["line"])


async def output_lines(db: Database, b: Batch, extend: Extend) -> AsyncIterator[str]:
    async for row in pages(db, sql.OUTPUT_PAGE, b, extend):
        yield output_line(b, row)


async def error_lines(
    db: Database, b: Batch, ended: BatchStatus, extend: Extend
) -> AsyncIterator[str]:
    async for row in pages(db, sql.ERROR_PAGE, b, extend):
        yield error_line(b, row, ended)
