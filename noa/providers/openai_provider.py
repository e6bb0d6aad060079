"""OpenAI and OpenAI-compatible upstreams through the official ``openai`` async SDK.

The client's body is forwarded as it came (extras included, in ``extra_body``) and the upstream's
JSON comes back as it went, read from the raw response: a gateway must not drop fields it does
not know. Every SDK exception becomes a NoaError in ``_translate_errors``, the one place.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import openai
import orjson

from noa.config import OpenAIProviderConfig
from noa.errors import (
    UpstreamError,
)
from noa.providers.base import Body, Provider
from noa.providers.sdk_errors import translated
from noa.wire import responses, sse


class OpenAIProvider(Provider):
    """Chat, completions and embeddings against ``base_url`` (OpenAI when unset)."""

    kind = "openai"

    def __init__(self, name: str, client: openai.AsyncOpenAI) -> None:
        self.name = name
        self._client = client

    @classmethod
    def from_config(
        cls, name: str, config: OpenAIProviderConfig, api_key: str, base_url: str | None
    ) -> OpenAIProvider:
        client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=config.timeout_s,
            max_retries=config.max_retries,
        )
        return cls(name, client)

    def _translate_errors(self) -> contextlib.AbstractContextManager[None]:
        return translated(self.name, openai)

    def _parse(self, content: bytes) -> Body:
        body = orjson.loads(content)
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        if "error" in body and "choices" not in body and "data" not in body:
            raise UpstreamError(
                f"provider '{self.name}' returned an error: {body['error']}", provider=self.name
            )
        return body

    @staticmethod
    def _split(request: Body, *drop: str) -> Body:
        return {k: v for k, v in request.items() if k not in drop and k != "model"}

    async def chat(self, request: Body, model: str) -> Body:
        extra = self._split(request, "messages", "stream")
        with self._translate_errors():
            raw = await self._client.chat.completions.with_raw_response.create(
                model=model, messages=request["messages"], extra_body=extra
            )
            return responses.normalize_chat_completion(self._parse(raw.content))

    async def stream_chat(self, request: Body, model: str) -> AsyncGenerator[Body, None]:
        extra = self._split(request, "messages", "stream", "stream_options")
        extra["stream_options"] = {**request.get("stream_options", {}), "include_usage": True}
        create = self._client.chat.completions.with_streaming_response.create
        opener = create(model=model, messages=request["messages"], stream=True, extra_body=extra)
        async with aclosing(self._stream(opener)) as chunks:
            async for chunk in chunks:
                yield responses.normalize_chat_chunk(chunk)

    async def completion(self, request: Body, model: str) -> Body:
        extra = self._split(request, "prompt", "stream")
        with self._translate_errors():
            raw = await self._client.completions.with_raw_response.create(
                model=model, prompt=request["prompt"], extra_body=extra
            )
            return responses.normalize_completion(self._parse(raw.content))

    async def stream_completion(self, request: Body, model: str) -> AsyncGenerator[Body, None]:
        extra = self._split(request, "prompt", "stream", "stream_options")
        extra["stream_options"] = {**request.get("stream_options", {}), "include_usage": True}
        create = self._client.completions.with_streaming_response.create
        opener = create(model=model, prompt=request["prompt"], stream=True, extra_body=extra)
        async with aclosing(self._stream(opener)) as chunks:
            async for chunk in chunks:
                yield responses.normalize_completion_chunk(chunk)

    async def embeddings(self, request: Body, model: str) -> Body:
        extra = self._split(request, "input", "encoding_format")
        with self._translate_errors():
            raw = await self._client.embeddings.with_raw_response.create(
                model=model,
                input=request["input"],
                encoding_format=request.get("encoding_format", "float"),
                extra_body=extra,
            )
            return responses.normalize_embeddings(self._parse(raw.content))

    async def _stream(self, opener: Any) -> AsyncGenerator[Body, None]:
        with self._translate_errors():
            async with opener as response, aclosing(sse.iter_data(response.iter_lines())) as events:
                async for data in events:
                    if data == "[DONE]":
                        return
                    chunk = orjson.loads(data)
                    if not isinstance(chunk, dict):
                        raise ValueError("stream event is not a JSON object")
                    if "error" in chunk and not chunk.get("choices"):
                        err = chunk["error"]
                        message = err.get("message") if isinstance(err, dict) else str(err)
                        raise UpstreamError(
                            f"provider '{self.name}' failed mid-stream: {message}",
                            provider=self.name,
                        )
                    yield chunk
            raise UpstreamError(
                f"provider '{self.name}' ended the stream without [DONE]", provider=self.name
            )

    async def check(self) -> None:
        with self._translate_errors():
            await self._client.models.with_raw_response.list()

    async def aclose(self) -> None:
        await self._client.close()
