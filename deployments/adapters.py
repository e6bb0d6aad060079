"""Provider deployments: OpenAIAdapter, AnthropicAdapter (one shell, two names)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from ray import serve

from noa.build.providers import cloud_providers
from noa.config import parse_config
from noa.errors import ServiceUnavailableError
from noa.providers.base import Body, Provider
from noa.wire.operations import Operation


class ProviderShell:
    """Serves one Provider core to handles (``RemoteProvider`` on the other side)."""

    provider: Provider

    async def call(self, operation: Operation, request: Body, model: str) -> Body:
        return await self.provider.call(operation, request, model)

    async def stream_batches(
        self, operation: Operation, request: Body, model: str
    ) -> AsyncGenerator[list[Body], None]:
        async with aclosing(self.provider.stream_batches(operation, request, model)) as batches:
            async for batch in batches:
                yield batch

    async def check(self) -> None:
        await self.provider.check()

    async def __del__(self) -> None:
        await self.provider.aclose()


@serve.deployment
class ProviderAdapter(ProviderShell):
    """A cloud provider's SDK client in its own replicas (deployed as OpenAIAdapter, ...)."""

    def __init__(self, config: dict[str, Any], name: str) -> None:
        providers = cloud_providers(parse_config(config))
        if name not in providers:
            raise ServiceUnavailableError(f"provider '{name}' has no API key in this process")
        self.provider = providers[name]
