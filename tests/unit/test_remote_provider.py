"""RemoteProvider and RemoteRouter over a stand-in for a DeploymentHandle (same call shape)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import pytest

from noa.errors import ModelNotFoundError, UpstreamError
from noa.providers.remote import RemoteProvider
from noa.wire.operations import Operation


class RayTaskError(Exception):
    """How Ray wraps a replica's exception: the original rides along as ``cause``."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class FakeStream:
    def __init__(self, items: list[Any], fail: Exception | None = None) -> None:
        self.items = items
        self.fail = fail
        self.cancelled = False

    def __aiter__(self) -> AsyncGenerator[Any, None]:
        return self._gen()

    async def _gen(self) -> AsyncGenerator[Any, None]:
        for item in self.items:
            yield item
        if self.fail:
            raise RayTaskError(self.fail)

    def cancel(self) -> None:
        self.cancelled = True


class FakeHandle:
    def __init__(self, behaviour: dict[str, Any], options: dict[str, Any] | None = None) -> None:
        self.behaviour = behaviour
        self.opts = options or {}
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = behaviour.setdefault(
            "calls", []
        )

    def options(self, **kwargs: Any) -> FakeHandle:
        return FakeHandle(self.behaviour, {**self.opts, **kwargs})

    def __getattr__(self, method: str) -> Any:
        handle = self

        class Method:
            def remote(self, *args: Any) -> Any:
                handle.calls.append((method, args, handle.opts))
                # a provider's calls name their operation first: scripted per operation
                key = f"{method}:{args[0]}" if args and isinstance(args[0], Operation) else method
                result = handle.behaviour[key]
                if handle.opts.get("stream"):
                    return result
                return _coro(result)

        return Method()


async def _coro(result: Any) -> Any:
    if isinstance(result, Exception):
        raise RayTaskError(result)
    return result


async def test_calls_route_by_model_and_errors_unwrap() -> None:
    behaviour = {"call:chat": {"ok": 1}, "call:embeddings": ModelNotFoundError("no such model")}
    provider = RemoteProvider("local", "llamacpp", FakeHandle(behaviour), multiplexed=True)
    assert await provider.call(Operation.CHAT, {"messages": []}, "m1") == {"ok": 1}
    method, args, opts = behaviour["calls"][-1]
    assert (method, args[0], args[2], opts) == (
        "call",
        "chat",
        "m1",
        {"stream": False, "multiplexed_model_id": "m1"},
    )
    with pytest.raises(ModelNotFoundError, match="no such model"):
        await provider.call(Operation.EMBEDDINGS, {"input": "x"}, "m1")


async def test_streams_arrive_in_batches_and_are_flattened() -> None:
    stream = FakeStream([[{"n": 1}, {"n": 2}], [{"n": 3}]])
    provider = RemoteProvider("p", "openai", FakeHandle({"stream_batches:chat": stream}))
    assert [c["n"] async for c in provider.stream(Operation.CHAT, {}, "m")] == [1, 2, 3]
    assert not stream.cancelled


async def test_a_stream_closed_early_cancels_the_remote_call() -> None:
    stream = FakeStream([[{"n": 1}], [{"n": 2}], [{"n": 3}]])
    provider = RemoteProvider("p", "openai", FakeHandle({"stream_batches:chat": stream}))
    chunks = provider.stream(Operation.CHAT, {}, "m")
    assert (await chunks.__anext__())["n"] == 1
    await chunks.aclose()
    assert stream.cancelled


async def test_a_failing_stream_raises_the_replicas_error() -> None:
    stream = FakeStream([[{"n": 1}]], fail=UpstreamError("cut"))
    provider = RemoteProvider("p", "openai", FakeHandle({"stream_batches:chat": stream}))
    with pytest.raises(UpstreamError, match="cut"):
        async for _ in provider.stream(Operation.CHAT, {}, "m"):
            pass
