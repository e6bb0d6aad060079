"""OpenAI and OpenAI-compatible upstreams (vLLM, llama-server, Ollama, Together, ...).

The client's body is forwarded as it came (extras included) and the upstream's JSON comes back
as it went: a gateway must not drop fields it does not know. The official ``openai`` SDK client
is built from the configuration either way; ``transport`` decides whether requests go through
it or through NOA's direct HTTP/1.1 path with the same URL and headers (see ``transport/``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from functools import partial

import openai
import orjson

from noa.config import OpenAIProviderConfig
from noa.errors import UpstreamError
from noa.providers import transport
from noa.providers.base import Answer, Body, Provider
from noa.providers.transport import Transport
from noa.wire import responses
from noa.wire.operations import Operation

Normalize = Callable[[Body], Body]
# operation -> (path at the upstream, the normaliser of its JSON answer, of its stream chunks)
PATHS: dict[Operation, tuple[str, Normalize, Normalize]] = {
    Operation.CHAT: (
        "chat/completions",
        responses.normalize_chat_completion,
        responses.normalize_chat_chunk,
    ),
    Operation.COMPLETIONS: (
        "completions",
        responses.normalize_completion,
        responses.normalize_completion_chunk,
    ),
}


class OpenAIProvider(Provider):
    """Chat, completions and embeddings against ``base_url`` (OpenAI when unset)."""

    kind = "openai"

    def __init__(self, name: str, transport: Transport) -> None:
        self.name = name
        self._transport = transport
        posts: dict[Operation, Answer] = {op: partial(self._post, op) for op in PATHS}
        self.answers = {**posts, Operation.EMBEDDINGS: self._embeddings}
        self.streams = {op: partial(self._stream, op) for op in PATHS}

    @classmethod
    def from_config(
        cls, name: str, config: OpenAIProviderConfig, api_key: str, base_url: str | None
    ) -> OpenAIProvider:
        return cls(
            name, transport.from_config(name, openai, openai.AsyncOpenAI, config, api_key, base_url)
        )

    @staticmethod
    def _body(request: Body, model: str, **overrides: object) -> Body:
        return {**request, "model": model, **overrides}

    async def _post(self, operation: Operation, request: Body, model: str) -> Body:
        path, normalize, _ = PATHS[operation]
        return normalize(await self._transport.post_json(path, self._body(request, model)))

    async def _embeddings(self, request: Body, model: str) -> Body:
        # Explicit float: asked for nothing, OpenAI's own SDK would request base64.
        encoding = request.get("encoding_format", "float")
        body = await self._transport.post_json(
            "embeddings", self._body(request, model, encoding_format=encoding)
        )
        return responses.normalize_embeddings(body)

    async def _stream(
        self, operation: Operation, request: Body, model: str
    ) -> AsyncGenerator[Body, None]:
        path, _, normalize = PATHS[operation]
        # Usage is always asked for (the gateway accounts for it); the client gets it only if
        # it asked too.
        options = {**request.get("stream_options", {}), "include_usage": True}
        body = self._body(request, model, stream=True, stream_options=options)
        async with aclosing(self._transport.stream(path, body)) as events:
            async for data in events:
                if data == "[DONE]":
                    return
                yield normalize(self._chunk(data))
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
