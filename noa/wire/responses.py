"""Builders and normalisers for OpenAI-shaped response bodies.

Providers produce plain dicts. Whatever their origin (an OpenAI-compatible upstream that omits
``refusal``, llama.cpp's own dicts, a translated Anthropic message), they leave through these
functions so that the fields OpenAI's schema requires are always present.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

Clock = Callable[[], float]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    body.update(extra)
    return body


def chat_message(
    content: str | None, tool_calls: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def chat_completion(
    *,
    id: str,
    model: str,
    message: dict[str, Any],
    finish_reason: str | None,
    usage_: dict[str, Any] | None,
    created: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
    }
    if usage_ is not None:
        body["usage"] = usage_
    return body


def chat_chunk(
    *,
    id: str,
    model: str,
    created: int,
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    usage_: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; with ``usage_`` and no delta, the final usage chunk."""
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
    }
    if delta is not None or finish_reason is not None:
        body["choices"] = [
            {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}
        ]
    if usage_ is not None:
        body["usage"] = usage_
    return body


def text_chunk(*, id: str, model: str, created: int) -> dict[str, Any]:
    """A ``text_completion`` stream chunk with no choices (a usage chunk once usage is added)."""
    return {
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [],
    }


def _stamp(body: dict[str, Any], kind: str, model: str | None) -> list[dict[str, Any]]:
    """The fields every body and chunk has; its choices, each with its ``index``."""
    body.setdefault("object", kind)
    body.setdefault("created", int(time.time()))
    if model is not None:
        body["model"] = model
    choices: list[dict[str, Any]] = body.get("choices") or []
    for i, choice in enumerate(choices):
        choice.setdefault("index", i)
    return choices


def normalize_chat_completion(body: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    """Fill the fields OpenAI's schema requires; optionally report ``model`` as NOA's id."""
    for choice in _stamp(body, "chat.completion", model):
        choice.setdefault("logprobs", None)
        choice.setdefault("finish_reason", "stop")
        message = choice.setdefault("message", {})
        message.setdefault("role", "assistant")
        message.setdefault("content", None)
        message.setdefault("refusal", None)
    return body


def normalize_chat_chunk(body: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    for choice in _stamp(body, "chat.completion.chunk", model):
        choice.setdefault("delta", {})
        choice.setdefault("finish_reason", None)
    if body.get("choices") is None:
        body["choices"] = []
    return body


def normalize_completion(body: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    for choice in _stamp(body, "text_completion", model):
        choice.setdefault("logprobs", None)
        choice.setdefault("finish_reason", "stop")
        choice.setdefault("text", "")
    return body


def normalize_completion_chunk(body: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    for choice in _stamp(body, "text_completion", model):
        choice.setdefault("logprobs", None)
        choice.setdefault("finish_reason", None)
        choice.setdefault("text", "")
    body.setdefault("choices", [])
    return body


def normalize_embeddings(body: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    body["object"] = "list"
    if model is not None:
        body["model"] = model
    for i, item in enumerate(body.get("data") or []):
        item.setdefault("object", "embedding")
        item.setdefault("index", i)
    u = body.get("usage") or {}
    prompt = int(u.get("prompt_tokens") or 0)
    body["usage"] = {"prompt_tokens": prompt, "total_tokens": int(u.get("total_tokens") or prompt)}
    return body


def model_card(model_id: str, owned_by: str, created: int = 0, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": owned_by,
    }
    body.update(extra)
    return body
