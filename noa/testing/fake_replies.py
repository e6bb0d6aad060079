"""What the fake upstream answers, as pure functions of the request body: a JSON body (a dict),
or the SSE events of a stream (a list of encoded events).

OpenAI: "echo: <last user text>", or a tool call when tools are given and forced (or the text
starts with "tool:"); usage counted in words. Anthropic: the same through the Messages API,
which refuses sampling parameters (API version 2026-10-21) and needs ``max_tokens``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from typing import Any

Body = dict[str, Any]
Reply = Body | list[bytes]
ANTHROPIC_SAMPLING = ("temperature", "top_p", "top_k")


def last_user_text(messages: list[Body]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


def fake_embedding(text: str, dims: int = 8) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    vec = [b / 255.0 - 0.5 for b in digest[:dims]]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p if i == 0 else " " + p for i, p in enumerate(parts)]


def data(event: Body) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def _usage(prompt: int, text: str) -> Body:
    completion = len(text.split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _with_usage(events: list[bytes], body: Body, base: Body, usage: Body) -> list[bytes]:
    """The stream's closing events: the usage chunk when asked for, then ``[DONE]``."""
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append(data({**base, "choices": [], "usage": usage}))
    events.append(DONE)
    return events


# -- OpenAI ------------------------------------------------------------------------------------


def _chat_text(body: Body) -> tuple[str, list[Body]]:
    text = last_user_text(body.get("messages") or [])
    tools = body.get("tools") or []
    forced = body.get("tool_choice") not in (None, "auto", "none")
    if tools and (forced or text.startswith("tool:")):
        name = tools[0]["function"]["name"]
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps({"echo": text})},
        }
        return "", [call]
    return f"echo: {text}", []


def openai_chat(body: Body) -> Reply:
    text, calls = _chat_text(body)
    model = body.get("model", "fake")
    prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in body["messages"])
    usage = _usage(prompt_tokens, text)
    finish = "tool_calls" if calls else "stop"
    if not body.get("stream"):
        message: Body = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = calls
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }
    base = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: Body, finish_reason: str | None = None) -> bytes:
        return data(
            {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        )

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": w}) for w in words(text)] if text else []
    events += [chunk({"tool_calls": [{"index": 0, **c}]}) for c in calls]
    events.append(chunk({}, finish))
    return _with_usage(events, body, base, usage)


def openai_completion(body: Body) -> Reply:
    text = f"echo: {body.get('prompt')}"
    base = {
        "id": "cmpl-fake",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
    }
    usage = _usage(1, text)

    def choice(piece: str, finish: str | None) -> Body:
        return {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish}

    if not body.get("stream"):
        return {**base, "choices": [choice(text, "stop")], "usage": usage}
    events = [data({**base, "choices": [choice(w, None)]}) for w in words(text)]
    events.append(data({**base, "choices": [choice("", "stop")]}))
    return _with_usage(events, body, base, usage)


def openai_embeddings(body: Body) -> Body:
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    vectors = [
        {"object": "embedding", "index": i, "embedding": fake_embedding(str(t))}
        for i, t in enumerate(inputs)
    ]
    return {
        "object": "list",
        "data": vectors,
        "model": body.get("model"),
        "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
    }


# -- Anthropic ---------------------------------------------------------------------------------


def anthropic_refusal(body: Body) -> str | None:
    """The 400 message the Messages API gives this body, if any."""
    for key in ANTHROPIC_SAMPLING:
        if key in body:
            return f"{key}: Extra inputs are not permitted"
    if "max_tokens" not in body:
        return "max_tokens: Field required"
    return None


def event(kind: str, fields: Body) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


def anthropic_message(body: Body) -> Reply:
    text = last_user_text(
        [{"role": m["role"], "content": m["content"]} for m in body.get("messages", [])]
    )
    tools = body.get("tools") or []
    forced = (body.get("tool_choice") or {}).get("type") in ("any", "tool")
    use_tool = bool(tools) and (forced or text.startswith("tool:"))
    model = body.get("model", "claude-fake")
    usage = {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 2}
    if use_tool:
        content: list[Body] = [
            {"type": "tool_use", "id": "toolu_1", "name": tools[0]["name"], "input": {"echo": text}}
        ]
        stop_reason = "tool_use"
    else:
        content = [{"type": "text", "text": f"echo: {text}"}]
        stop_reason = "end_turn"
    message = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
    if not body.get("stream"):
        return message
    started = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 2},
    }
    events = [event("message_start", {"message": started}), event("ping", {})]
    block = content[0]
    if use_tool:
        opened = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        args = json.dumps(block["input"])
        half = len(args) // 2
        deltas = [
            {"type": "input_json_delta", "partial_json": p} for p in (args[:half], args[half:])
        ]
    else:
        opened = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": w} for w in words(block["text"])]
    events.append(event("content_block_start", {"index": 0, "content_block": opened}))
    events += [event("content_block_delta", {"index": 0, "delta": d}) for d in deltas]
    events.append(event("content_block_stop", {"index": 0}))
    events.append(
        event(
            "message_delta",
            {
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": 3},
            },
        )
    )
    events.append(event("message_stop", {}))
    return events
