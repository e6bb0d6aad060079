"""Local GGUF models through llama-cpp-python, with every blocking call off the event loop.

One worker thread per provider runs llama.cpp, so a replica generates one answer at a time (the
library is not re-entrant) while its event loop keeps accepting, queueing and cancelling
requests. Streams hand tokens from that thread to the loop as they are produced; a consumer that
goes away stops generation at the next token.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import aclosing
from typing import Any

from noa.errors import InvalidRequestError, NoaError, UpstreamError
from noa.providers.base import Body, Provider
from noa.providers.llamacpp_models import ModelStore
from noa.wire import responses

_SAMPLING = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "stop")
_DONE = object()


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


class _TokenCounts:
    """Token usage of a stream, counted in the worker thread as llama.cpp produces it.

    llama.cpp yields one chunk per generated token; when the first one arrives the context
    holds exactly the prompt, so ``n_tokens`` then is the prompt's length.
    """

    def __init__(self) -> None:
        self.prompt = 0
        self.completion = 0

    def count(self, llm: Any, make: Callable[[], Iterator[Body]]) -> Callable[[], Iterator[Body]]:
        def counted() -> Iterator[Body]:
            for chunk in make():
                choices = chunk.get("choices") or []
                # One chunk per token; the closing chunk (finish_reason set) carries none.
                if (
                    choices
                    and choices[0].get("finish_reason") is None
                    and ("text" in choices[0] or "content" in choices[0].get("delta", {}))
                ):
                    if self.completion == 0:
                        self.prompt = int(llm.n_tokens)
                    self.completion += 1
                yield chunk

        return counted

    def usage(self) -> Body:
        return responses.usage(self.prompt, self.completion)


class LlamaCppProvider(Provider):
    """Chat, completions and embeddings from GGUF files via a ``ModelStore``."""

    kind = "llamacpp"

    def __init__(self, name: str, store: ModelStore, executor: Executor | None = None) -> None:
        self.name = name
        self._store = store
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="llama")

    @property
    def executor(self) -> Executor:
        return self._executor

    async def _run(self, fn: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn)
        except NoaError:
            raise
        except ValueError as e:  # llama.cpp's way to say "prompt too long" and the like
            raise InvalidRequestError(f"local model rejected the request: {e}") from e
        except Exception as e:
            raise UpstreamError(f"local model failed: {e}", provider=self.name) from e

    async def _iterate(self, make: Callable[[], Iterator[Body]]) -> AsyncGenerator[Body, None]:
        """Items of a blocking iterator produced in the worker thread, as they come."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                it = make()
                try:
                    for item in it:
                        loop.call_soon_threadsafe(queue.put_nowait, item)
                        if stop.is_set():
                            break
                finally:
                    close = getattr(it, "close", None)
                    if close is not None:
                        close()
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)
            except BaseException as e:  # handed to the consumer, which raises it
                loop.call_soon_threadsafe(queue.put_nowait, e)

        future = loop.run_in_executor(self._executor, produce)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    if isinstance(item, ValueError):
                        raise InvalidRequestError(f"local model rejected the request: {item}")
                    raise UpstreamError(f"local model failed: {item}", provider=self.name)
                yield item
        finally:
            stop.set()
            if not future.done():
                # Let the worker notice and stop at its next token; never block the loop.
                future.add_done_callback(lambda f: f.exception())

    async def chat(self, request: Body, model: str) -> Body:
        kwargs = chat_kwargs(request)
        llm = await self._store.get(model, False)
        result = await self._run(lambda: llm.create_chat_completion(**kwargs))
        return responses.normalize_chat_completion(result, model=model)

    async def stream_chat(self, request: Body, model: str) -> AsyncGenerator[Body, None]:
        kwargs = chat_kwargs(request)
        llm = await self._store.get(model, False)
        counts = _TokenCounts()
        last: Body | None = None
        chunks = counts.count(llm, lambda: llm.create_chat_completion(**kwargs, stream=True))
        async with aclosing(self._iterate(chunks)) as produced:
            async for chunk in produced:
                last = chunk
                yield responses.normalize_chat_chunk(chunk, model=model)
        if last is not None:
            yield responses.chat_chunk(
                id=last["id"], model=model, created=last["created"], usage_=counts.usage()
            )

    async def completion(self, request: Body, model: str) -> Body:
        kwargs = completion_kwargs(request)
        prompts = _prompts(request, stream=False)
        llm = await self._store.get(model, False)

        def run() -> Body:
            results = [llm.create_completion(p, **kwargs) for p in prompts]
            body = results[0]
            body["choices"] = [{**r["choices"][0], "index": i} for i, r in enumerate(results)]
            body["usage"] = responses.usage(
                sum(r["usage"]["prompt_tokens"] for r in results),
                sum(r["usage"]["completion_tokens"] for r in results),
            )
            return body

        return responses.normalize_completion(await self._run(run), model=model)

    async def stream_completion(self, request: Body, model: str) -> AsyncGenerator[Body, None]:
        kwargs = completion_kwargs(request)
        (prompt,) = _prompts(request, stream=True)
        llm = await self._store.get(model, False)
        counts = _TokenCounts()
        last: Body | None = None
        chunks = counts.count(llm, lambda: llm.create_completion(prompt, **kwargs, stream=True))
        async with aclosing(self._iterate(chunks)) as produced:
            async for chunk in produced:
                last = chunk
                yield responses.normalize_completion_chunk(chunk, model=model)
        if last is not None:
            yield {
                "id": last["id"],
                "object": "text_completion",
                "created": last["created"],
                "model": model,
                "choices": [],
                "usage": counts.usage(),
            }

    async def embeddings(self, request: Body, model: str) -> Body:
        raw = request["input"]
        inputs = [raw] if isinstance(raw, str) else raw
        if not all(isinstance(t, str) for t in inputs):
            raise _bad("local models embed text, not token ids", "input")
        encoding = request.get("encoding_format") or "float"
        llm = await self._store.get(model, True)
        dimensions = request.get("dimensions")
        if dimensions is not None and dimensions != llm.n_embd():
            raise _bad(f"this model produces {llm.n_embd()}-dimensional embeddings", "dimensions")

        def run() -> tuple[list[list[float]], int]:
            return llm.embed(inputs, normalize=True, truncate=False, return_count=True)

        vectors, tokens = await self._run(run)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encode_embedding(v, encoding)}
                for i, v in enumerate(vectors)
            ],
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def check(self) -> None:
        """Loading state only: a probe must never run a generation."""

    async def aclose(self) -> None:
        aclose = getattr(self._store, "aclose", None)
        if aclose is not None:
            await aclose()
