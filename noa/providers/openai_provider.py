"""OpenAI and OpenAI-compatible upstreams (vLLM, llama-server, Ollama, Together, ...).

The client's body is forwarded as it came (extras included) and the upstream's JSON comes back
as it went: a gateway must not drop fields it does not know. The official ``openai`` SDK client
is built from the configuration either way; ``transport`` decides whether requests go through
it or through NOA's direct HTTP/1.1 path with the same URL and headers (see ``transport.py``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

import openai
import orjson

from noa.config import OpenAIProviderConfig
from noa.errors import UpstreamError
from noa.providers.base import Body, Provider
from noa.providers.transport import DirectTransport, SdkTransport, Transport
from noa.wire import responses


class OpenAIProvider(Provider):
    """Chat, completions and embeddings against ``base_url`` (OpenAI when unset)."""

    kind = "openai"

    def __init__(self, name: str, transport: Transport) -> None:
        self.name = name
        self._transport = transport

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
        transport: Transport
        if config.transport == "sdk":
            transport = SdkTransport(name, client, openai)
        else:
            transport = DirectTransport.from_sdk_client(name, client, config.timeout_s)
        return cls(name, transport)

    @staticmethod
    def _body(request: Body, model: str, **overrides: object) -> Body:
        return {**request, "model": model, **overrides}

    async def chat(self, request: Body, model: str) -> Body:
        body = await self._transport.post_json("chat/completions", self._body(request, model))
        return responses.normalize_chat_completion(body)

    async def stream_chat(self, request: Body, model: str) -> AsyncGenerator[Body, None]:
        async with aclosing(self._stream("chat/completions", request, model)) as chunks:
            async for chunk in chunks:
                yield responses.normalize_chat_chunk(chunk)

    async def completion(self, request: Body, model: str) -> Body:
        body = await self._transport.post_json("completions", self._body(request, model))
        return responses.normalize_completion(body)

    async def stream_completion(self, request: Body, model: str) -> AsyncGenerator[Body, None]:
        async with aclosing(self._stream("completions", request, model)) as chunks:
            async for chunk in chunks:
                yield responses.normalize_completion_chunk(chunk)

    async def embeddings(self, request: Body, model: str) -> Body:
        # Explicit float: asked for nothing, OpenAI's own SDK would request base64.
        encoding = request.get("encoding_format", "float")
        body = await self._transport.post_json(
            "embeddings", self._body(request, model, encoding_format=encoding)
        )
        return responses.normalize_embeddings(body)

    async def _stream(self, path: str, request: Body, model: str) -> AsyncGenerator[Body, None]:
        # Usage is always asked for (the gateway accounts for it); the client gets it only if
        # it asked too.
        options = {**request.get("stream_options", {}), "include_usage": True}
        body = self._body(request, model, stream=True, stream_options=options)
        async with aclosing(self._transport.stream(path, body)) as events:
            async for data in events:
                if data == "[DONE]":
                    return
                yield self._chunk(data)
        raise UpstreamError(
            f"provider '{self.name}' ended the stream without [DONE]", provider=self.name
        )

    def _chunk(self, data: str) -> Body:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise UpstreamError(
                f"provider '{self.name}' sent a malformed stream event: {e}", provider=self.name
            ) from e
        if not isinstance(chunk, dict):
            raise UpstreamError(
                f"provider '{self.name}' sent a non-object stream event", provider=self.name
            )
        if "error" in chunk and not chunk.get("choices"):
            err = chunk["error"]
            message = err.get("message") if isinstance(err, dict) else str(err)
            raise UpstreamError(
                f"provider '{self.name}' failed mid-stream: {message}", provider=self.name
            )
        return chunk

    async def check(self) -> None:
        await self._transport.get_json("models")

    async def aclose(self) -> None:
        await self._transport.aclose()
