"""Server-sent events: framing NOA's streams and reading an upstream's."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


def encode(data: dict[str, Any]) -> bytes:
    """One ``data:`` event (orjson never emits raw newlines, so one line is enough)."""
    return b"data: " + orjson.dumps(data) + b"\n\n"


async def iter_data(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """The ``data`` payload of each event in an SSE line stream (multi-line data joined)."""
    buf: list[str] = []
    async for line in lines:
        if not line:
            if buf:
                yield "\n".join(buf)
                buf = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            buf.append(value[1:] if value.startswith(" ") else value)
    if buf:
        yield "\n".join(buf)
