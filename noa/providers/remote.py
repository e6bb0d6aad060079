"""A Provider that forwards to a deployment exposing the Provider methods.

It speaks to anything shaped like a Ray Serve ``DeploymentHandle`` (``.options(...)``,
``.method.remote(...)``) without importing Ray, so the builder can place a provider in-process
or behind a handle and the router cannot tell the difference.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from noa.errors import NoaError
from noa.providers.base import Body, Provider
from noa.wire.operations import Operation

_MAX_CACHED_HANDLES = 256


def unwrap_remote_error(e: BaseException) -> BaseException:
    """The NoaError raised inside the replica, when a handle wrapped it (RayTaskError)."""
    if isinstance(e, NoaError) and type(e).__module__ == "noa.errors":
        return e
    cause = getattr(e, "cause", None)
    if isinstance(cause, NoaError):
        return cause
    return e


async def relay(responses: Any) -> AsyncGenerator[Any, None]:
    """Items of a handle's response generator; closing early cancels the remote call."""
    finished = False
    try:
        async for item in responses:
            yield item
        finished = True
    except Exception as e:
        finished = True
        raise unwrap_remote_error(e) from None
    finally:
        if not finished:
            cancel = getattr(responses, "cancel", None)
            if cancel is not None:
                cancel()


class RemoteProvider(Provider):
    """Forwards every call to ``handle``; with ``multiplexed``, routes by model id."""

    def __init__(self, name: str, kind: str, handle: Any, *, multiplexed: bool = False) -> None:
        self.name = name
        self.kind = kind
        self._handle = handle
        self._multiplexed = multiplexed
        self._handles: dict[tuple[str, bool], Any] = {}

    def _for(self, model: str, stream: bool = False) -> Any:
        key = (model if self._multiplexed else "", stream)
        handle = self._handles.get(key)
        if handle is None:
            options: dict[str, Any] = {"stream": stream}
            if self._multiplexed:
                options["multiplexed_model_id"] = model
            if len(self._handles) >= _MAX_CACHED_HANDLES:
                self._handles.clear()
            handle = self._handles[key] = self._handle.options(**options)
        return handle

    async def call(self, operation: Operation, request: Body, model: str) -> Body:
        try:
            result: Body = await self._for(model).call.remote(operation, request, model)
        except Exception as e:
            raise unwrap_remote_error(e) from None
        return result

    async def stream(
        self, operation: Operation, request: Body, model: str
    ) -> AsyncGenerator[Body, None]:
        batches = self._for(model, stream=True).stream_batches.remote(operation, request, model)
        async with aclosing(relay(batches)) as received:
            async for batch in received:
                for chunk in batch:
                    yield chunk

    async def check(self) -> None:
        try:
            await self._for("").check.remote()
        except Exception as e:
            raise unwrap_remote_error(e) from None
