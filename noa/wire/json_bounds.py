"""What a request body may hold: JSON that NOA can carry on, checked before any work is done.

A body that nests deeper than ``MAX_DEPTH`` (objects and arrays, the body itself at depth 1)
is refused with a 400: NOA re-encodes bodies (for providers, cache keys, stores) with orjson,
which stops at 255 levels, and nothing a client sends needs more than a few dozen (a tool's
JSON Schema included).

Top-level body models derive from ``BoundedJson``: the check runs on the raw value, before
pydantic looks at its fields, and fails as a ``PydanticCustomError`` that
``noa.wire.validation`` turns into the 400.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, model_validator
from pydantic_core import PydanticCustomError

MAX_DEPTH = 64
TOO_DEEP = "json_too_deep"  # the validation error's type
_CONTAINERS = (dict, list)  # a tuple: isinstance with it is several times faster than a union


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests objects and arrays more than ``limit`` levels deep (iterative:
    a deep value cannot exhaust the stack)."""
    level = [value] if isinstance(value, _CONTAINERS) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        inner: list[Any] = []
        for container in level:
            for item in container.values() if isinstance(container, dict) else container:
                if isinstance(item, _CONTAINERS):
                    inner.append(item)
        level = inner
    return False


def _may_be_deep(value: Any) -> bool:
    """A cheap first look: a body with no more than ``MAX_DEPTH`` objects and arrays in all
    cannot nest deeper (counted on its encoding, in C; brackets inside strings only count
    against it). Most bodies stop here."""
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError:
        return True
    return encoded.count(b"[") + encoded.count(b"{") > MAX_DEPTH


def check_depth(value: Any) -> None:
    if _may_be_deep(value) and depth_exceeds(value):
        raise PydanticCustomError(
            TOO_DEEP,
            "The request body nests objects and arrays more than {limit} levels deep",
            {"limit": MAX_DEPTH},
        )


class BoundedJson(BaseModel):
    """A whole request body: refused when it nests deeper than ``MAX_DEPTH``."""

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        check_depth(data)
        return data
