"""Requests through the official SDK client's own request path (``client.post``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from types import ModuleType
from typing import Any

import httpx2

from noa.providers.transport.direct import Body, parse_object
from noa.providers.transport.sdk_errors import translated
from noa.wire import sse


class SdkTransport:
    """Through the official SDK client's own request path (``client.post``)."""

    def __init__(self, provider: str, client: Any, sdk: ModuleType) -> None:
        self.provider = provider
        self._client = client
        self._sdk = sdk

    async def post_json(self, path: str, body: Body) -> Body:
        with translated(self.provider, self._sdk):
            response = await self._client.post(path, body=body, cast_to=httpx2.Response)
            return parse_object(response.content, self.provider)

    async def stream(self, path: str, body: Body) -> AsyncGenerator[str, None]:
        with translated(self.provider, self._sdk):
            response = await self._client.post(
                path, body=body, cast_to=httpx2.Response, stream=True
            )
            try:
                async with contextlib.aclosing(sse.iter_data(response.aiter_lines())) as events:
                    async for data in events:
                        yield data
            finally:
                await response.aclose()

    async def get_json(self, path: str) -> Body:
        with translated(self.provider, self._sdk):
            response = await self._client.get(path, cast_to=httpx2.Response)
            return parse_object(response.content, self.provider)

    async def aclose(self) -> None:
        await self._client.close()
