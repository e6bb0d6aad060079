"""Between the two shapes of an answer: a complete body and the chunks of its stream.

The cache stores an answer in the shape it arrived in (a streamed answer once complete, as its
chunks; a plain one as its body), and serves either kind of request from either: ``assemble``
turns chunks into the body a non-streaming client expects, ``replay`` turns a body into the
chunks a streaming client expects. Works for chat (``delta``) and text completions (``text``).
"""

from __future__ import annotations

import copy
from typing import Any

Body = dict[str, Any]


def _merge_tool_calls(into: list[Body], deltas: list[Body]) -> None:
    for delta in deltas:
        index = delta.get("index", len(into))
        while len(into) <= index:
            into.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        call = into[index]
        if delta.get("id"):
            call["id"] = delta["id"]
        if delta.get("type"):
            call["type"] = delta["type"]
        function = delta.get("function") or {}
        if function.get("name"):
            call["function"]["name"] += function["name"]
        if function.get("arguments"):
            call["function"]["arguments"] += function["arguments"]


def assemble(chunks: list[Body]) -> Body:
    """The complete body a stream of ``chunks`` adds up to."""
    first = chunks[0]
    chat = first.get("object") == "chat.completion.chunk"
    choices: dict[int, Body] = {}
    usage = None
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for part in chunk.get("choices") or []:
            index = part.get("index", 0)
            choice = choices.get(index)
            if choice is None:
                choice = choices[index] = {"index": index, "finish_reason": None, "logprobs": None}
                if chat:
                    choice["message"] = {"role": "assistant", "content": None, "refusal": None}
                else:
                    choice["text"] = ""
            if part.get("finish_reason"):
                choice["finish_reason"] = part["finish_reason"]
            if part.get("logprobs"):
                merged = choice["logprobs"] or {"content": []}
                merged["content"] = merged.get("content", []) + (
                    part["logprobs"].get("content") or []
                )
                choice["logprobs"] = merged
            if not chat:
                choice["text"] += part.get("text") or ""
                continue
            delta = part.get("delta") or {}
            message = choice["message"]
            if delta.get("role"):
                message["role"] = delta["role"]
            if delta.get("content") is not None:
                message["content"] = (message["content"] or "") + delta["content"]
            if delta.get("refusal"):
                message["refusal"] = (message["refusal"] or "") + delta["refusal"]
            if delta.get("tool_calls"):
                _merge_tool_calls(message.setdefault("tool_calls", []), delta["tool_calls"])
    body: Body = {
        "id": first.get("id"),
        "object": "chat.completion" if chat else "text_completion",
        "created": first.get("created"),
        "model": first.get("model"),
        "choices": [choices[i] for i in sorted(choices)],
    }
    if first.get("system_fingerprint") is not None:
        body["system_fingerprint"] = first["system_fingerprint"]
    if usage is not None:
        body["usage"] = usage
    return body


def replay(body: Body) -> list[Body]:
    """The chunks of a stream that adds up to ``body`` (the usage chunk last, if known)."""
    chat = body.get("object") == "chat.completion"
    base = {
        "id": body.get("id"),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": body.get("created"),
        "model": body.get("model"),
    }
    if body.get("system_fingerprint") is not None:
        base["system_fingerprint"] = body["system_fingerprint"]
    chunks: list[Body] = []
    for choice in body.get("choices") or []:
        index = choice.get("index", 0)
        if not chat:
            text = choice.get("text") or ""
            for piece, finish in ((text, None), ("", choice.get("finish_reason"))):
                part = {"index": index, "text": piece, "logprobs": None, "finish_reason": finish}
                chunks.append({**base, "choices": [part]})
            continue
        message = choice.get("message") or {}
        delta: Body = {"role": message.get("role", "assistant"), "content": message.get("content")}
        if message.get("refusal"):
            delta["refusal"] = message["refusal"]
        if message.get("tool_calls"):
            delta["tool_calls"] = [
                {**copy.deepcopy(call), "index": i} for i, call in enumerate(message["tool_calls"])
            ]
        chunks.append(
            {
                **base,
                "choices": [
                    {
                        "index": index,
                        "delta": delta,
                        "logprobs": choice.get("logprobs"),
                        "finish_reason": None,
                    }
                ],
            }
        )
        chunks.append(
            {
                **base,
                "choices": [
                    {
                        "index": index,
                        "delta": {},
                        "logprobs": None,
                        "finish_reason": choice.get("finish_reason"),
                    }
                ],
            }
        )
    if body.get("usage") is not None:
        chunks.append({**base, "choices": [], "usage": body["usage"]})
    return chunks
