"""The router across a DeploymentHandle: the Router deployment's side and the caller's side.

A plan crosses the handle as it is (picklable). A routed stream comes back as one generator
whose first item is the ``RouteInfo``; it is yielded only after the router primed the
provider's stream, so errors before the first token still reach the caller as exceptions.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from noa.providers.remote import relay, unwrap_remote_error
from noa.routing.plan import Plan
from noa.routing.results import PrimedStream, Routed, RouteInfo
from noa.routing.router import Router


async def stream_items(router: Router, plan: Plan) -> AsyncGenerator[Any, None]:
    """Router deployment side: ``RouteInfo`` first, then the chunks."""
    stream = await router.open(plan)
    try:
        yield stream.info
        async for chunk in stream:
            yield chunk
    finally:
        await stream.aclose()


class RemoteRouter:
    """Caller side: ``route(plan)`` over a handle to the Router deployment (``route`` for
    JSON answers, ``stream`` for streamed ones)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._streaming = handle.options(stream=True)

    async def route(self, plan: Plan) -> Routed | PrimedStream:
        if plan.stream:
            return await self._open(plan)
        try:
            routed: Routed = await self._handle.route.remote(plan)
        except Exception as e:
            raise unwrap_remote_error(e) from None
        return routed

    async def _open(self, plan: Plan) -> PrimedStream:
        generator = self._streaming.stream.remote(plan)
        try:
            info: RouteInfo = await generator.__anext__()
        except BaseException as e:
            generator.cancel()
            raise unwrap_remote_error(e) from None
        return PrimedStream(info, None, relay(generator), None)
