"""What a request body may hold: JSON that NOA can carry on, checked before any work is done.

NOA re-encodes bodies (for providers, cache keys, stores) with orjson, so a body is refused
with a 400 when orjson could not encode it, wherever in the body the culprit sits (free-form
parts such as tools, content parts and extra fields included):

- it nests deeper than ``MAX_DEPTH`` (objects and arrays, the body itself at depth 1): orjson
  stops at 255 levels, and nothing a client sends needs more than a few dozen (a tool's JSON
  Schema included);
- a string (or key) holds a lone UTF-16 surrogate, which UTF-8 cannot encode (JSON decoders
  other than orjson, and Python callers, let them through);
- an integer is beyond 64 bits;
- a value is not JSON at all (a Python caller's set or object; a key that is not a string).

Top-level body models derive from ``BoundedJson``: the check runs on the raw value, before
pydantic looks at its fields, and fails as a ``PydanticCustomError`` that
``noa.wire.validation`` turns into the 400. It costs one orjson encoding of the body; the
body is walked in Python only when that fails or the body holds many objects and arrays.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, model_validator
from pydantic_core import PydanticCustomError

MAX_DEPTH = 64
TOO_DEEP = "json_too_deep"  # the validation errors' types
UNREPRESENTABLE = "json_unrepresentable"
_CONTAINERS = (dict, list)  # a tuple: isinstance with it is several times faster than a union
_SCALARS = (str, int, float, bool, type(None))
_MIN, _MAX = -(2**63), 2**64 - 1  # what orjson encodes: signed and unsigned 64-bit integers


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


def _string_problem(value: str) -> str | None:
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "strings must not contain lone UTF-16 surrogates"
    return None


def _scalar_problem(value: Any) -> str | None:
    if isinstance(value, str):
        return _string_problem(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return None  # non-finite floats: typed fields refuse them, free-form ones encode as null
    if isinstance(value, int):
        return None if _MIN <= value <= _MAX else "integers must fit in 64 bits"
    return f"{type(value).__name__} is not a JSON value"


def _dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in path)


def first_problem(value: Any) -> tuple[str, str] | None:
    """(where, why) for the first part of ``value`` orjson could not encode, or None."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            children: list[tuple[tuple[str | int, ...], Any]] = []
            for key, child in item.items():
                if not isinstance(key, str):
                    return _dotted(path), "object keys must be strings"
                problem = _string_problem(key)
                if problem is not None:
                    return _dotted(path), problem
                children.append(((*path, key), child))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend(((*path, i), child) for i, child in reversed(list(enumerate(item))))
        else:
            problem = _scalar_problem(item)
            if problem is not None:
                return _dotted(path), problem
    return None


def check_json(value: Any) -> None:
    """Raise the validation error for a value NOA could not carry on (see the module doc)."""
    try:
        encoded: bytes | None = orjson.dumps(value)
    except orjson.JSONEncodeError:
        encoded = None
    if encoded is not None and encoded.count(b"[") + encoded.count(b"{") <= MAX_DEPTH:
        return  # few objects and arrays: not too deep either (brackets in strings only add)
    if depth_exceeds(value):
        raise PydanticCustomError(
            TOO_DEEP,
            "The request body nests objects and arrays more than {limit} levels deep",
            {"limit": MAX_DEPTH},
        )
    if encoded is not None:
        return
    where, why = first_problem(value) or ("", "it cannot be encoded as JSON")
    raise PydanticCustomError(UNREPRESENTABLE, "{why}", {"why": why, "param": where})


class BoundedJson(BaseModel):
    """A whole request body: refused when NOA could not carry it on (see the module doc)."""

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        check_json(data)
        return data
