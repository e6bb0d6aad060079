"""Provider deployments: OpenAIAdapter, AnthropicAdapter (one shell, two names)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from ray import serve

from noa import assembly
from noa.config import parse_config
from noa.errors import ServiceUnavailableError
from noa.providers.base import Body, Provider


class ProviderShell:
    """Serves one Provider core's methods to handles (RemoteProvider on the other side)."""

    provider: Provider

    async def chat(self, request: Body, model: str) -> Body:
        return await self.provider.chat(request, model)

    async def stream_chat_batches(
        self, request: Body, model: str
    ) -> AsyncGenerator[list[Body], None]:
        async with aclosing(self.provider.stream_chat_batches(request, model)) as batches:
            async for batch in batches:
                yield batch

    async def completion(self, request: Body, model: str) -> Body:
        return await self.provider.completion(request, model)

    async def stream_completion_batches(
        self, request: Body, model: str
    ) -> AsyncGenerator[list[Body], None]:
        async with aclosing(self.provider.stream_completion_batches(request, model)) as batches:
            async for batch in batches:
                yield batch

    async def embeddings(self, request: Body, model: str) -> Body:
        return await self.provider.embeddings(request, model)

    async def check(self) -> None:
        await self.provider.check()

    async def __del__(self) -> None:
        await self.provider.aclose()


@serve.deployment
class ProviderAdapter(ProviderShell):
    """A cloud provider's SDK client in its own replicas (deployed as OpenAIAdapter, ...)."""

    def __init__(self, config: dict[str, Any], name: str) -> None:
        providers = assembly.cloud_providers(parse_config(config))
        if name not in providers:
            raise ServiceUnavailableError(f"provider '{name}' has no API key in this process")
        self.provider = providers[name]
