"""OpenAI chat <-> Anthropic Messages translation (API version 2026-10-21), as pure functions.

Request: leading system/developer messages become ``system``; tool results become ``tool_result``
blocks in a user turn; assistant ``tool_calls`` become ``tool_use`` blocks; images and PDFs
become ``image``/``document`` blocks; ``stop`` becomes ``stop_sequences``; ``response_format``
becomes ``output_config.format``. Sampling parameters (temperature, top_p, seed, penalties) are
left out: API version 2026-10-21 answers 400 to any of them, even at their defaults, and every
OpenAI client sends some.

Response: text blocks join into ``content``, ``tool_use`` blocks become ``tool_calls``, stop
reasons map to finish reasons, and cache reads count as prompt tokens (OpenAI's convention).
"""

from __future__ import annotations

import json
from typing import Any

from noa.errors import InvalidRequestError, UpstreamError
from noa.wire import responses

Body = dict[str, Any]

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic-native fields a client may send through NOA as body extensions.
# (``metadata`` and ``service_tier`` also exist in OpenAI's API with other meanings: only
# values Anthropic accepts pass.)
NATIVE_EXTRAS = (
    "thinking",
    "output_config",
    "cache_control",
    "container",
    "inference_geo",
    "speed",
)
ANTHROPIC_SERVICE_TIERS = ("auto", "standard_only")


def _bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _media_block(url: str, kind: str, param: str) -> Body:
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if encoding != "base64" or not data:
            raise _bad("only base64 data URLs are supported", param)
        return {"type": kind, "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": kind, "source": {"type": "url", "url": url}}
    raise _bad("expected a data: or http(s) URL", param)


def _content_blocks(content: Any, param: str) -> list[Body]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[Body] = []
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            blocks.append(_media_block(str(url or ""), "image", p))
        elif kind == "file":
            data = (part.get("file") or {}).get("file_data")
            if not data:
                raise _bad("file parts need file_data (a base64 data URL)", p)
            blocks.append(_media_block(str(data), "document", p))
        elif kind == "refusal":
            blocks.append({"type": "text", "text": part.get("refusal", "")})
        else:
            raise _bad(f"content part type '{kind}' is not supported by Anthropic models", p)
    return blocks


def _tool_use_blocks(tool_calls: list[Body], param: str) -> list[Body]:
    blocks = []
    for j, call in enumerate(tool_calls):
        fn = call.get("function") or {}
        try:
            arguments = json.loads(fn.get("arguments") or "{}")
        except json.JSONDecodeError:
            raise _bad("tool call arguments must be a JSON object", f"{param}[{j}]") from None
        blocks.append(
            {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": arguments}
        )
    return blocks


def _tool_result_block(message: Body, param: str) -> Body:
    content = message.get("content")
    if not message.get("tool_call_id"):
        raise _bad("tool messages need tool_call_id", f"{param}.tool_call_id")
    result: Body = {"type": "tool_result", "tool_use_id": message["tool_call_id"]}
    if isinstance(content, list):
        result["content"] = _content_blocks(content, f"{param}.content")
    else:
        result["content"] = content or ""
    return result


def convert_messages(messages: list[Body]) -> tuple[list[Body], list[Body]]:
    """(system blocks, alternating user/assistant messages)."""
    system: list[Body] = []
    out: list[Body] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        param = f"messages[{i}]"
        if role in ("system", "developer"):
            blocks = _content_blocks(message.get("content"), f"{param}.content")
            if not out:
                system.extend(blocks)
            else:
                out.append({"role": "system", "content": blocks})
            continue
        if role == "user":
            blocks = _content_blocks(message.get("content"), f"{param}.content")
            anthropic_role = "user"
        elif role == "assistant":
            blocks = _content_blocks(message.get("content"), f"{param}.content")
            blocks += _tool_use_blocks(message.get("tool_calls") or [], f"{param}.tool_calls")
            anthropic_role = "assistant"
        elif role == "tool":
            blocks = [_tool_result_block(message, param)]
            anthropic_role = "user"
        else:
            raise _bad(f"role '{role}' is not supported by Anthropic models", f"{param}.role")
        if not blocks:
            continue
        if out and out[-1]["role"] == anthropic_role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": anthropic_role, "content": blocks})
    if not out:
        raise _bad("at least one user or assistant message is required", "messages")
    return system, out


def _tools(tools: list[Body]) -> list[Body]:
    out = []
    for tool in tools:
        if tool.get("type", "function") != "function":
            out.append(tool)  # an Anthropic-native tool (web search, ...) passes as it is
            continue
        fn = tool["function"]
        converted: Body = {
            "name": fn["name"],
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            converted["description"] = fn["description"]
        if fn.get("strict") is not None:
            converted["strict"] = fn["strict"]
        out.append(converted)
    return out


def _tool_choice(choice: Any, parallel: bool | None) -> Body | None:
    if choice is None:
        result: Body | None = {"type": "auto"} if parallel is False else None
    elif choice == "auto":
        result = {"type": "auto"}
    elif choice == "required":
        result = {"type": "any"}
    elif choice == "none":
        result = {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        result = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        raise _bad(f"tool_choice {choice!r} is not supported", "tool_choice")
    if result is not None and parallel is False and result["type"] != "none":
        result["disable_parallel_tool_use"] = True
    return result


def _output_format(response_format: Body) -> Body | None:
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "json_schema", "schema": {"type": "object"}}
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise _bad("response_format.json_schema.schema is required", "response_format")
        return {"type": "json_schema", "schema": schema}
    raise _bad(f"response_format type '{kind}' is not supported", "response_format")


def to_anthropic(request: Body, model: str, default_max_tokens: int) -> Body:
    """The Messages API parameters for an OpenAI chat request."""
    if (request.get("n") or 1) > 1:
        raise _bad("Anthropic models return one choice; n must be 1", "n")
    if request.get("logprobs"):
        raise _bad("Anthropic models do not return logprobs", "logprobs")
    system, messages = convert_messages(request["messages"])
    params: Body = {
        "model": model,
        "messages": messages,
        "max_tokens": request.get("max_completion_tokens")
        or request.get("max_tokens")
        or default_max_tokens,
    }
    if system:
        params["system"] = system
    stop = request.get("stop")
    if stop:
        params["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if request.get("tools"):
        params["tools"] = _tools(request["tools"])
    choice = _tool_choice(request.get("tool_choice"), request.get("parallel_tool_calls"))
    if choice is not None and request.get("tools"):
        params["tool_choice"] = choice
    for key in NATIVE_EXTRAS:
        if key in request:
            params[key] = request[key]
    if request.get("service_tier") in ANTHROPIC_SERVICE_TIERS:
        params["service_tier"] = request["service_tier"]
    if request.get("user"):
        params["metadata"] = {"user_id": request["user"]}
    fmt = _output_format(request.get("response_format") or {})
    if fmt is not None:
        params["output_config"] = {**params.get("output_config", {}), "format": fmt}
    return params


def _usage(u: Body) -> Body:
    cache_read = int(u.get("cache_read_input_tokens") or 0)
    cache_write = int(u.get("cache_creation_input_tokens") or 0)
    prompt = int(u.get("input_tokens") or 0) + cache_read + cache_write
    return responses.usage(
        prompt,
        int(u.get("output_tokens") or 0),
        prompt_tokens_details={"cached_tokens": cache_read},
    )


def _tool_call(block: Body) -> Body:
    return {
        "id": block["id"],
        "type": "function",
        "function": {"name": block["name"], "arguments": json.dumps(block.get("input") or {})},
    }


def from_anthropic(message: Body) -> Body:
    """A ``chat.completion`` for a Messages API response."""
    if message.get("type") == "error" or "content" not in message:
        raise UpstreamError(f"malformed Anthropic reply: {str(message)[:200]}")
    blocks = message["content"]
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    tool_calls = [_tool_call(b) for b in blocks if b.get("type") == "tool_use"]
    body = responses.chat_completion(
        id=message.get("id") or responses.new_id("chatcmpl"),
        model=message.get("model", ""),
        message=responses.chat_message(text if (text or not tool_calls) else None, tool_calls),
        finish_reason=FINISH_REASONS.get(message.get("stop_reason") or "end_turn", "stop"),
        usage_=_usage(message.get("usage") or {}),
    )
    return body


class StreamTranslator:
    """Turns Messages API stream events (dicts) into ``chat.completion.chunk`` dicts."""

    def __init__(self, created: int) -> None:
        self.created = created
        self.id = responses.new_id("chatcmpl")
        self.model = ""
        self._usage: Body = {}
        self._tool_index: dict[int, int] = {}
        self.finished = False

    def _chunk(self, delta: Body | None = None, finish_reason: str | None = None) -> Body:
        return responses.chat_chunk(
            id=self.id,
            model=self.model,
            created=self.created,
            delta=delta if delta is not None else {},
            finish_reason=finish_reason,
        )

    def feed(self, event: Body) -> list[Body]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = message.get("id") or self.id
            self.model = message.get("model") or self.model
            self._usage.update(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = len(self._tool_index)
                self._tool_index[int(event.get("index", 0))] = index
                call = {
                    "index": index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                index = self._tool_index.get(int(event.get("index", 0)), 0)
                call = {"index": index, "function": {"arguments": delta.get("partial_json", "")}}
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "message_delta":
            self._usage.update(
                {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
            )
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason:
                return [self._chunk({}, FINISH_REASONS.get(reason, "stop"))]
            return []
        if kind == "message_stop":
            self.finished = True
            return [
                responses.chat_chunk(
                    id=self.id, model=self.model, created=self.created, usage_=self.usage()
                )
            ]
        if kind == "error":
            err = event.get("error") or {}
            raise UpstreamError(f"Anthropic stream error: {err.get('message') or err}")
        return []  # ping, content_block_stop, and event types added later

    def usage(self) -> Body:
        return _usage(self._usage)
