"""The router core: resolve a request's model, call its provider, say what happened.

Streams are *primed*: the router waits for the provider's first chunk before handing the stream
back, so a failure before the first token is still an ordinary error with its own status code
(and, with fallback chains, a reason to try the next provider) rather than a broken 200.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from noa.errors import ServiceUnavailableError
from noa.providers.base import Body, Provider
from noa.registry import ModelRegistry, Route

Operation = Literal["chat", "completions", "embeddings"]


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """What the gateway reports in ``x-noa-*`` headers (picklable: crosses handles)."""

    model: str
    provider: str
    upstream: str
    attempts: int = 1

    @classmethod
    def of(cls, route: Route) -> RouteInfo:
        return cls(route.model_id, route.provider, route.upstream)

    def headers(self) -> dict[str, str]:
        return {
            "x-noa-provider": self.provider,
            "x-noa-model": self.model,
            "x-noa-attempts": str(self.attempts),
        }


@dataclass(frozen=True, slots=True)
class Routed:
    body: Body
    info: RouteInfo


class PrimedStream:
    """An async iterator whose first item was already fetched; ``aclose`` releases upstream."""

    def __init__(
        self, info: RouteInfo, first: Body | None, rest: AsyncIterator[Body], model: str | None
    ) -> None:
        self.info = info
        self._first = first
        self._rest = rest
        self._model = model

    def __aiter__(self) -> PrimedStream:
        return self

    async def __anext__(self) -> Body:
        if self._first is not None:
            item, self._first = self._first, None
        else:
            item = await self._rest.__anext__()
        if self._model is not None:
            item["model"] = self._model
        return item

    async def aclose(self) -> None:
        aclose = getattr(self._rest, "aclose", None)
        if aclose is not None:
            await aclose()


async def _empty() -> AsyncGenerator[Body, None]:
    return
    yield  # pragma: no cover - makes this an async generator


class Router:
    """Routes OpenAI-shaped requests to providers by the registry's rules."""

    def __init__(
        self,
        registry: ModelRegistry,
        providers: Mapping[str, Provider],
        *,
        rename_models: frozenset[str] = frozenset(),
    ) -> None:
        self.registry = registry
        self._providers = dict(providers)
        # Providers whose answers name a file rather than a model (llama.cpp) report NOA's id.
        self._rename = rename_models

    def _target(self, request: Body, op: Operation, stream: bool) -> tuple[Route, Provider]:
        route = self.registry.resolve(request["model"], op, stream=stream)
        provider = self._providers.get(route.provider)
        if provider is None:
            raise ServiceUnavailableError(
                f"provider '{route.provider}' is configured but not running",
                provider=route.provider,
            )
        return route, provider

    def _model_for(self, route: Route) -> str | None:
        return route.model_id if route.provider in self._rename else None

    async def _call(self, op: Operation, method: str, request: Body) -> Routed:
        route, provider = self._target(request, op, stream=False)
        body: Body = await getattr(provider, method)(request, route.upstream)
        model = self._model_for(route)
        if model is not None:
            body["model"] = model
        return Routed(body, RouteInfo.of(route))

    async def _open(self, op: Operation, method: str, request: Body) -> PrimedStream:
        route, provider = self._target(request, op, stream=True)
        stream: AsyncIterator[Body] = getattr(provider, method)(request, route.upstream)
        iterator = stream.__aiter__()
        try:
            first: Body | None = await iterator.__anext__()
        except StopAsyncIteration:
            return PrimedStream(RouteInfo.of(route), None, _empty(), None)
        except BaseException:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
            raise
        return PrimedStream(RouteInfo.of(route), first, iterator, self._model_for(route))

    async def chat(self, request: Body) -> Routed:
        return await self._call("chat", "chat", request)

    async def stream_chat(self, request: Body) -> PrimedStream:
        return await self._open("chat", "stream_chat", request)

    async def completion(self, request: Body) -> Routed:
        return await self._call("completions", "completion", request)

    async def stream_completion(self, request: Body) -> PrimedStream:
        return await self._open("completions", "stream_completion", request)

    async def embeddings(self, request: Body) -> Routed:
        return await self._call("embeddings", "embeddings", request)

    async def check(self) -> dict[str, Any]:
        """Each running provider's probe result: ``"ok"`` or the error message."""
        results: dict[str, Any] = {}
        for name, provider in self._providers.items():
            try:
                await provider.check()
                results[name] = "ok"
            except Exception as e:
                results[name] = str(e) or type(e).__name__
        return results

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
