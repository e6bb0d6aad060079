"""Local GGUF models through llama-cpp-python, run in a worker process (``process.py``).

This module turns OpenAI requests into llama-cpp-python calls and their results back into
OpenAI responses; the worker runs them, one at a time, with no GIL shared with the replica's
event loop. A stream's consumer that goes away cancels generation at the next token.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from noa.errors import InvalidRequestError
from noa.providers.base import Body, Provider
from noa.providers.llamacpp.models import ModelRef, ModelStore
from noa.providers.llamacpp.process import LlamaProcess
from noa.wire import responses
from noa.wire.operations import Operation

Batches = Callable[[Body, str], AsyncGenerator[list[Body], None]]
_SAMPLING = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "stop")


def _bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _logit_bias(bias: dict[str, float] | None) -> dict[int, float] | None:
    if not bias:
        return None
    try:
        return {int(k): float(v) for k, v in bias.items()}
    except ValueError:
        raise _bad("logit_bias keys must be token ids", "logit_bias") from None


def _flatten(message: Body, i: int) -> Body:
    content = message.get("content")
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if part.get("type") != "text":
                raise _bad(
                    f"content part type '{part.get('type')}' is not supported by local models",
                    f"messages[{i}].content[{j}]",
                )
            texts.append(part.get("text", ""))
        message = {**message, "content": "".join(texts)}
    elif content is None:
        message = {**message, "content": ""}
    return message


def _response_format(fmt: Body | None) -> Body | None:
    """llama-cpp-python constrains output by grammar for ``json_object`` (with an optional
    ``schema``); OpenAI's ``json_schema`` form is translated to it rather than ignored."""
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object", **({"schema": fmt["schema"]} if "schema" in fmt else {})}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise _bad("response_format.json_schema.schema is required", "response_format")
        return {"type": "json_object", "schema": schema}
    raise _bad(f"response_format type '{fmt.get('type')}' is not supported", "response_format")


def chat_kwargs(request: Body) -> dict[str, Any]:
    """llama-cpp-python ``create_chat_completion`` arguments for an OpenAI chat request."""
    if (request.get("n") or 1) > 1:
        raise _bad("local models return one choice; n must be 1", "n")
    kwargs: dict[str, Any] = {
        "messages": [_flatten(m, i) for i, m in enumerate(request["messages"])],
        "max_tokens": request.get("max_completion_tokens") or request.get("max_tokens"),
        "logit_bias": _logit_bias(request.get("logit_bias")),
    }
    for key in (*_SAMPLING, "tools", "tool_choice", "logprobs"):
        if request.get(key) is not None:
            kwargs[key] = request[key]
    response_format = _response_format(request.get("response_format"))
    if response_format is not None:
        kwargs["response_format"] = response_format
    if request.get("top_logprobs") is not None:
        kwargs["top_logprobs"] = request["top_logprobs"]
    return kwargs


def completion_kwargs(request: Body) -> dict[str, Any]:
    if (request.get("n") or 1) > 1 or (request.get("best_of") or 1) > 1:
        raise _bad("local models return one choice; n and best_of must be 1", "n")
    kwargs: dict[str, Any] = {
        "max_tokens": request.get("max_tokens", 16) or None,
        "logit_bias": _logit_bias(request.get("logit_bias")),
    }
    for key in (*_SAMPLING, "echo", "suffix", "logprobs"):
        if request.get(key) is not None:
            kwargs[key] = request[key]
    return kwargs


def _prompts(request: Body, stream: bool) -> list[str]:
    prompt = request["prompt"]
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not all(isinstance(p, str) for p in prompts):
        raise _bad("local models take text prompts, not token ids", "prompt")
    if stream and len(prompts) != 1:
        raise _bad("a streamed completion takes one prompt", "prompt")
    return prompts


def _encode_embedding(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


class LlamaCppProvider(Provider):
    """Chat, completions and embeddings from GGUF files via a ``ModelStore`` and a worker."""

    kind = "llamacpp"

    def __init__(self, name: str, store: ModelStore, worker: LlamaProcess) -> None:
        self.name = name
        self._store = store
        self._worker = worker
        self.answers = {
            Operation.CHAT: self._chat,
            Operation.COMPLETIONS: self._completion,
            Operation.EMBEDDINGS: self._embeddings,
        }
        # the worker sends chunks in batches: streams are made of batches here, not of chunks
        self._batches: dict[Operation, Batches] = {
            Operation.CHAT: self._chat_batches,
            Operation.COMPLETIONS: self._completion_batches,
        }

    async def stream(
        self, operation: Operation, request: Body, model: str
    ) -> AsyncGenerator[Body, None]:
        async with aclosing(self.stream_batches(operation, request, model)) as batches:
            async for batch in batches:
                for chunk in batch:
                    yield chunk

    def stream_batches(
        self, operation: Operation, request: Body, model: str
    ) -> AsyncGenerator[list[Body], None]:
        batches = self._batches.get(operation)
        if batches is None:
            raise self.unsupported(operation)
        return batches(request, model)

    async def _chat(self, request: Body, model: str) -> Body:
        kwargs = chat_kwargs(request)
        ref = await self._store.get(model, False)
        result = await self._worker.call("chat", ref, kwargs)
        return responses.normalize_chat_completion(result, model=model)

    async def _chat_batches(self, request: Body, model: str) -> AsyncGenerator[list[Body], None]:
        kwargs = chat_kwargs(request)
        ref = await self._store.get(model, False)
        async with aclosing(self._relay("chat", ref, kwargs, model)) as batches:
            async for batch in batches:
                yield batch

    async def _relay(
        self, kind: str, ref: ModelRef, payload: Body, model: str
    ) -> AsyncGenerator[list[Body], None]:
        """The worker's batches of ``kind`` ("chat" or "completion") as OpenAI chunks, then the
        usage chunk once the worker reported the counts."""
        chat = kind == "chat"
        normalize = responses.normalize_chat_chunk if chat else responses.normalize_completion_chunk
        usage: dict[str, int] = {}
        last: Body | None = None
        async with aclosing(self._worker.stream(kind, ref, payload, usage)) as batches:
            async for batch in batches:
                last = batch[-1]
                yield [normalize(chunk, model=model) for chunk in batch]
        if last is None:
            return
        counts = _usage(usage)
        ids = {"id": last["id"], "model": model, "created": last["created"]}
        if chat:
            yield [responses.chat_chunk(**ids, usage_=counts)]
        else:
            yield [{**responses.text_chunk(**ids), "usage": counts}]

    async def _completion(self, request: Body, model: str) -> Body:
        kwargs = completion_kwargs(request)
        prompts = _prompts(request, stream=False)
        ref = await self._store.get(model, False)
        results = await self._worker.call("completion", ref, {"prompts": prompts, "kwargs": kwargs})
        body: Body = results[0]
        body["choices"] = [{**r["choices"][0], "index": i} for i, r in enumerate(results)]
        body["usage"] = responses.usage(
            sum(r["usage"]["prompt_tokens"] for r in results),
            sum(r["usage"]["completion_tokens"] for r in results),
        )
        return responses.normalize_completion(body, model=model)

    async def _completion_batches(
        self, request: Body, model: str
    ) -> AsyncGenerator[list[Body], None]:
        kwargs = completion_kwargs(request)
        (prompt,) = _prompts(request, stream=True)
        ref = await self._store.get(model, False)
        payload = {"prompt": prompt, "kwargs": kwargs}
        async with aclosing(self._relay("completion", ref, payload, model)) as batches:
            async for batch in batches:
                yield batch

    async def _embeddings(self, request: Body, model: str) -> Body:
        raw = request["input"]
        inputs = [raw] if isinstance(raw, str) else raw
        if not all(isinstance(t, str) for t in inputs):
            raise _bad("local models embed text, not token ids", "input")
        encoding = request.get("encoding_format") or "float"
        ref = await self._store.get(model, True)
        result = await self._worker.call("embed", ref, {"inputs": inputs})
        dimensions = request.get("dimensions")
        if dimensions is not None and dimensions != result["dimensions"]:
            raise _bad(
                f"this model produces {result['dimensions']}-dimensional embeddings",
                "dimensions",
            )
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encode_embedding(v, encoding)}
                for i, v in enumerate(result["vectors"])
            ],
            "model": model,
            "usage": {"prompt_tokens": result["tokens"], "total_tokens": result["tokens"]},
        }

    async def check(self) -> None:
        """Loading state only: a probe must never run a generation."""

    async def aclose(self) -> None:
        await self._worker.aclose()


def _usage(counts: dict[str, int]) -> Body:
    return responses.usage(counts.get("prompt", 0), counts.get("completion", 0))
