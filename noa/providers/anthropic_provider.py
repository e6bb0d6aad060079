"""Anthropic's Messages API through the official ``anthropic`` async SDK.

Translation lives in ``anthropic_translate`` (pure functions); this module only moves bytes and
maps SDK exceptions to NoaErrors in ``_translate_errors``, the one place.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import anthropic
import orjson

from noa.config import AnthropicProviderConfig
from noa.errors import (
    UpstreamError,
)
from noa.providers import anthropic_translate as translate
from noa.providers.base import Body, Provider
from noa.providers.sdk_errors import translated
from noa.wire import sse


class AnthropicProvider(Provider):
    """OpenAI-shaped chat (JSON and SSE) over Claude models."""

    kind = "anthropic"

    def __init__(
        self, name: str, client: anthropic.AsyncAnthropic, default_max_tokens: int = 4096
    ) -> None:
        self.name = name
        self._client = client
        self._default_max_tokens = default_max_tokens

    @classmethod
    def from_config(
        cls, name: str, config: AnthropicProviderConfig, api_key: str, base_url: str | None
    ) -> AnthropicProvider:
        client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            timeout=config.timeout_s,
            max_retries=config.max_retries,
        )
        return cls(name, client, config.default_max_tokens)

    def _translate_errors(self) -> contextlib.AbstractContextManager[None]:
        return translated(self.name, anthropic)

    def _params(self, request: Body, model: str) -> dict[str, Any]:
        return translate.to_anthropic(request, model, self._default_max_tokens)

    async def chat(self, request: Body, model: str) -> Body:
        params = self._params(request, model)
        with self._translate_errors():
            raw = await self._client.messages.with_raw_response.create(**params)
            message = orjson.loads(await raw.read())
            if not isinstance(message, dict):
                raise ValueError("expected a JSON object")
            return translate.from_anthropic(message)

    async def stream_chat(self, request: Body, model: str) -> AsyncGenerator[Body, None]:
        params = self._params(request, model)
        translator = translate.StreamTranslator(created=int(time.time()))
        with self._translate_errors():
            opener = self._client.messages.with_streaming_response.create(**params, stream=True)
            async with opener as response, aclosing(sse.iter_data(response.iter_lines())) as events:
                async for data in events:
                    event = orjson.loads(data)
                    if not isinstance(event, dict):
                        raise ValueError("stream event is not a JSON object")
                    for chunk in translator.feed(event):
                        yield chunk
            if not translator.finished:
                raise UpstreamError(
                    f"provider '{self.name}' ended the stream before message_stop",
                    provider=self.name,
                )

    async def check(self) -> None:
        with self._translate_errors():
            await self._client.models.with_raw_response.list()

    async def aclose(self) -> None:
        await self._client.close()
