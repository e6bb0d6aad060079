"""Anthropic's Messages API, as OpenAI-shaped chat.

Translation lives in ``noa/wire/anthropic.py`` (pure functions). The official ``anthropic`` SDK
client is built from the configuration either way: it defines the base URL, the auth header and
the API version (``anthropic-version``) that NOA speaks; ``transport`` decides whether requests
go through it or through NOA's direct HTTP/1.1 path with the same headers.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

import anthropic
import orjson

from noa.config import AnthropicProviderConfig
from noa.errors import UpstreamError
from noa.providers import transport
from noa.providers.base import Body, Provider
from noa.providers.transport import Transport
from noa.wire import anthropic as translate
from noa.wire.operations import Operation

MESSAGES = "/v1/messages"


class AnthropicProvider(Provider):
    """OpenAI-shaped chat (JSON and SSE) over Claude models."""

    kind = "anthropic"

    def __init__(self, name: str, transport: Transport, default_max_tokens: int = 4096) -> None:
        self.name = name
        self._transport = transport
        self._default_max_tokens = default_max_tokens
        self.answers = {Operation.CHAT: self._chat}
        self.streams = {Operation.CHAT: self._stream_chat}

    @classmethod
    def from_config(
        cls, name: str, config: AnthropicProviderConfig, api_key: str, base_url: str | None
    ) -> AnthropicProvider:
        sdk = transport.from_config(
            name, anthropic, anthropic.AsyncAnthropic, config, api_key, base_url
        )
        return cls(name, sdk, config.default_max_tokens)

    def _params(self, request: Body, model: str) -> Body:
        return translate.to_anthropic(request, model, self._default_max_tokens)

    async def _chat(self, request: Body, model: str) -> Body:
        message = await self._transport.post_json(MESSAGES, self._params(request, model))
        try:
            return translate.from_anthropic(message)
        except (KeyError, TypeError, AttributeError) as e:
            raise UpstreamError(
                f"provider '{self.name}' sent a malformed reply: {e}", provider=self.name
            ) from e

    async def _stream_chat(self, request: Body, model: str) -> AsyncGenerator[Body, None]:
        params = {**self._params(request, model), "stream": True}
        translator = translate.StreamTranslator(created=int(time.time()))
        async with aclosing(self._transport.stream(MESSAGES, params)) as events:
            async for data in events:
                try:
                    event = orjson.loads(data)
                    chunks = translator.feed(event)
                except UpstreamError as e:
                    e.provider = self.name
                    raise
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                    raise UpstreamError(
                        f"provider '{self.name}' sent a malformed stream event: {e}",
                        provider=self.name,
                    ) from e
                for chunk in chunks:
                    yield chunk
        if not translator.finished:
            raise UpstreamError(
                f"provider '{self.name}' ended the stream before message_stop",
                provider=self.name,
            )

    async def check(self) -> None:
        await self._transport.get_json("/v1/models")

    async def aclose(self) -> None:
        await self._transport.aclose()
