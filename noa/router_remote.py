"""The router across a DeploymentHandle: the Router deployment's side and the caller's side.

A routed stream crosses the handle as one generator whose first item is the ``RouteInfo``; it is
yielded only after the router primed the provider's stream, so errors before the first token
still reach the caller as exceptions.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from noa.providers.base import Body
from noa.providers.remote import relay, unwrap_remote_error
from noa.router import PrimedStream, Routed, RouteInfo, Router


async def stream_items(router: Router, method: str, request: Body) -> AsyncGenerator[Any, None]:
    """Router deployment side: ``RouteInfo`` first, then the chunks."""
    stream: PrimedStream = await getattr(router, method)(request)
    try:
        yield stream.info
        async for chunk in stream:
            yield chunk
    finally:
        await stream.aclose()


class RemoteRouter:
    """Caller side: the ``RouterLike`` interface over a handle to the Router deployment."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._streaming = handle.options(stream=True)

    async def _call(self, method: str, request: Body) -> Routed:
        try:
            routed: Routed = await getattr(self._handle, method).remote(request)
        except Exception as e:
            raise unwrap_remote_error(e) from None
        return routed

    async def _open(self, method: str, request: Body) -> PrimedStream:
        generator = getattr(self._streaming, method).remote(request)
        try:
            info: RouteInfo = await generator.__anext__()
        except BaseException as e:
            generator.cancel()
            raise unwrap_remote_error(e) from None
        return PrimedStream(info, None, relay(generator), None)

    async def chat(self, request: Body) -> Routed:
        return await self._call("chat", request)

    async def stream_chat(self, request: Body) -> PrimedStream:
        return await self._open("stream_chat", request)

    async def completion(self, request: Body) -> Routed:
        return await self._call("completion", request)

    async def stream_completion(self, request: Body) -> PrimedStream:
        return await self._open("stream_completion", request)

    async def embeddings(self, request: Body) -> Routed:
        return await self._call("embeddings", request)
