"""Response-cache keys: a versioned hash of a canonical form of the request.

Two requests get the same key exactly when they must get the same answer:

- every parameter that can change the answer is in the key (sampling, stop, tools, tool_choice,
  response_format, seed, n, logit_bias, logprobs, penalties, provider-specific extras, and any
  field NOA does not know, since an unknown field may change the answer);
- fields that cannot change it are left out: ``stream``, ``stream_options``, ``user``,
  ``metadata``, ``store``; the ``model`` is the resolved model id (aliases share a key);
- insignificant differences are normalised: key order, ``null`` fields (same as absent),
  integral floats (``1.0`` is ``1``), ``stop: "x"`` vs ``["x"]``, text content as a string vs a
  list of text parts, ``max_tokens`` vs ``max_completion_tokens`` on chat;
- the key is scoped to a tenant (an API key or team) unless the model is shared.

Changing the canonical form changes ``VERSION``, so old entries are never misread.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

VERSION = "noa-cache-v1"

# Cannot change the answer: never part of the key.
IGNORED = frozenset({"model", "stream", "stream_options", "user", "metadata", "store"})


def _number(value: float) -> float | int:
    """An integral float as the int it equals, within 64 bits (beyond, no int is sent as such:
    JSON decoders read those as floats, and orjson encodes no larger int)."""
    return int(value) if value.is_integer() and abs(value) < 2**63 else value


def _normal(value: Any) -> Any:
    """Nulls dropped from objects, integral floats as ints, recursively."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, float):
        return _number(value)
    return value


def _content(content: Any) -> Any:
    """A list of only text parts says the same as their concatenated string."""
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and set(p) <= {"type", "text"}
        for p in content
    ):
        return "".join(str(p.get("text", "")) for p in content)
    return content


def canonical(operation: str, request: dict[str, Any]) -> dict[str, Any]:
    """The request as the key sees it (without model and tenant)."""
    body = {k: v for k, v in request.items() if k not in IGNORED and v is not None}
    if operation == "chat":
        if "max_tokens" in body and "max_completion_tokens" not in body:
            body["max_completion_tokens"] = body.pop("max_tokens")
        messages = body.get("messages")
        if isinstance(messages, list):
            body["messages"] = [
                {**m, "content": _content(m.get("content"))} if isinstance(m, dict) else m
                for m in messages
            ]
    stop = body.get("stop")
    if isinstance(stop, str):
        body["stop"] = [stop]
    normal: dict[str, Any] = _normal(body)
    return normal


def cache_key(
    operation: str, model_id: str, request: dict[str, Any], tenant: str | None = None
) -> str:
    """``VERSION:<sha256>`` of the canonical request, its resolved model and its tenant."""
    payload = {
        "op": operation,
        "model": model_id,
        "tenant": tenant,
        "request": canonical(operation, request),
    }
    digest = hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{VERSION}:{digest}"


def deterministic(operation: str, request: dict[str, Any]) -> bool:
    """Whether the request asks for a reproducible answer: temperature 0, or a seed.

    Non-deterministic requests are not cached unless the policy or the request asks for it.
    """
    if operation == "embeddings":
        return True
    if request.get("seed") is not None:
        return True
    temperature = request.get("temperature")
    return temperature is not None and temperature == 0
