"""What a Gateway offers, independent of HTTP: validated OpenAI requests in, responses out.

The FastAPI routes and the Python handle methods (``serve.get_app_handle("noa").chat``) both go
through this class, so a handle caller gets exactly what an HTTP caller gets: the same
validation, the same errors, the same response bodies.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from noa.accounting import Accounting
from noa.errors import InvalidRequestError
from noa.identity import MASTER, Principal
from noa.registry import ModelRegistry
from noa.response_cache import BODY_FIELD, Policy, ResponseCache, requested_policy
from noa.router import Operation, PrimedStream, Routed
from noa.tracing import Tracing, record_error
from noa.wire.requests import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    dump,
)

Body = dict[str, Any]


class RouterLike(Protocol):
    async def chat(self, request: Body) -> Routed: ...
    async def stream_chat(self, request: Body) -> PrimedStream: ...
    async def completion(self, request: Body) -> Routed: ...
    async def stream_completion(self, request: Body) -> PrimedStream: ...
    async def embeddings(self, request: Body) -> Routed: ...


def validation_error(errors: Sequence[Mapping[str, Any]]) -> InvalidRequestError:
    """A 400 naming the first offending field, as OpenAI does (``messages.0.role``)."""
    first = errors[0]
    kind = first["type"]
    if kind == "json_invalid":
        ctx = first.get("ctx") or {}
        return InvalidRequestError(
            f"The request body is not valid JSON: {ctx.get('error', first['msg'])}",
            code="invalid_json",
        )
    param = ".".join(str(p) for p in first["loc"] if p != "body") or None
    if param is None:
        if kind == "missing":
            return InvalidRequestError("The request body is empty: expected a JSON object.")
        if isinstance(first.get("input"), bytes):  # not sent as JSON: the raw body came through
            return InvalidRequestError(
                "The request body must be JSON, sent with Content-Type: application/json.",
                code="invalid_json",
            )
        return InvalidRequestError("The request body must be a JSON object.", code="invalid_json")
    if kind == "missing":
        message = f"Missing required parameter: '{param}'."
    else:
        message = f"Invalid value for '{param}': {first['msg']}."
    return InvalidRequestError(message, param=param, code="invalid_value")


def parse(model: type[BaseModel], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise validation_error(e.errors()) from None


def include_usage(request: Body) -> bool:
    return bool((request.get("stream_options") or {}).get("include_usage"))


async def client_chunks(stream: PrimedStream, with_usage: bool) -> AsyncGenerator[Body, None]:
    """The stream as the client asked for it: the provider's usage chunk only on request."""
    try:
        async for chunk in stream:
            if not with_usage and not chunk.get("choices") and "usage" in chunk:
                continue
            yield chunk
    finally:
        await stream.aclose()


class NoaService:
    """Chat, completions, embeddings and models, over a router (in-process or remote), behind
    the response cache when there is one.

    ``cache`` is the policy the request asked for in its ``x-noa-cache`` header (the body's
    ``noa_cache`` field is read here). ``principal`` is who asks (the HTTP layer authenticated
    it; Python callers inside the cluster are trusted like the master key): its limits and
    budget are checked before anything else, its cache entries are its tenant's, and its usage
    is recorded when the answer is complete.
    """

    def __init__(
        self,
        router: RouterLike,
        registry: ModelRegistry,
        cache: ResponseCache | None = None,
        accounting: Accounting | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.router = router
        self.registry = registry
        self.cache = cache
        self.accounting = accounting
        self.tracing = tracing or Tracing()

    async def _cached(
        self,
        operation: Operation,
        body: Body,
        stream: bool,
        call: Callable[[Body], Awaitable[Routed | PrimedStream]],
        asked: Policy | None,
        tenant: str | None,
    ) -> Routed | PrimedStream:
        if self.cache is None:
            return await call(body)
        lookup = self.cache.decide(operation, body, asked, tenant)
        hit = await self.cache.lookup(lookup, stream)
        if hit is not None:
            return hit
        return await self.cache.through(lookup, stream, lambda: call(body))

    async def _answer(
        self,
        operation: Operation,
        body: Body,
        stream: bool,
        call: Callable[[Body], Awaitable[Routed | PrimedStream]],
        asked: str | None,
        principal: Principal | None,
    ) -> Routed | PrimedStream:
        if not self.tracing.enabled:
            return await self._settled(operation, body, stream, call, asked, principal)
        what = {
            "noa.operation": operation,
            "noa.model": str(body.get("model")),
            "noa.stream": stream,
        }
        with self.tracing.span("noa.route", **what) as span:
            try:
                result = await self._settled(operation, body, stream, call, asked, principal)
            except BaseException as e:
                record_error(span, e)
                raise
            if span is not None:
                for key, value in result.info.metadata().items():
                    if isinstance(value, str | int):
                        span.set_attribute(f"noa.{key}", value)
            return result

    async def _settled(
        self,
        operation: Operation,
        body: Body,
        stream: bool,
        call: Callable[[Body], Awaitable[Routed | PrimedStream]],
        asked: str | None,
        principal: Principal | None,
    ) -> Routed | PrimedStream:
        """Admission, the (cached) answer, and its accounting."""
        principal = principal or MASTER
        policy = requested_policy(asked, body)  # a bad one is a 400 before anything is spent
        body.pop(BODY_FIELD, None)  # NOA's own field: never sent upstream
        accounting = self.accounting
        if accounting is None:
            return await self._cached(operation, body, stream, call, policy, principal.tenant)
        ticket = await accounting.admit(principal, operation, body, stream)
        started = accounting.clock()
        try:
            result = await self._cached(operation, body, stream, call, policy, principal.tenant)
        except BaseException as e:
            await accounting.failed(principal, operation, ticket, started, e)
            raise
        if isinstance(result, PrimedStream):
            return accounting.stream(result, principal, operation, ticket, started)
        usage = result.body.get("usage")
        await accounting.finish(principal, operation, ticket, started, result.info, usage, 200)
        return accounting.answered(result, ticket)

    async def chat(
        self,
        request: ChatCompletionRequest,
        cache: str | None = None,
        principal: Principal | None = None,
    ) -> Routed | PrimedStream:
        stream = bool(request.stream)
        call = self.router.stream_chat if stream else self.router.chat
        return await self._answer("chat", dump(request), stream, call, cache, principal)

    async def completion(
        self,
        request: CompletionRequest,
        cache: str | None = None,
        principal: Principal | None = None,
    ) -> Routed | PrimedStream:
        stream = bool(request.stream)
        call = self.router.stream_completion if stream else self.router.completion
        return await self._answer("completions", dump(request), stream, call, cache, principal)

    async def embeddings(
        self,
        request: EmbeddingRequest,
        cache: str | None = None,
        principal: Principal | None = None,
    ) -> Routed:
        result = await self._answer(
            "embeddings", dump(request), False, self.router.embeddings, cache, principal
        )
        assert isinstance(result, Routed)
        return result

    def list_models(self) -> Body:
        return {"object": "list", "data": self.registry.list_models()}

    def get_model(self, model_id: str) -> Body:
        return self.registry.get_model(model_id)

    # Python callers (DeploymentHandles) send the same JSON bodies as HTTP clients.

    async def call(self, operation: str, body: Any) -> Body | AsyncIterator[Body]:
        """``chat``/``completions``/``embeddings`` for a raw body: a dict, or chunks if streamed."""
        if operation == "chat":
            result = await self.chat(parse(ChatCompletionRequest, body))
        elif operation == "completions":
            result = await self.completion(parse(CompletionRequest, body))
        elif operation == "embeddings":
            result = await self.embeddings(parse(EmbeddingRequest, body))
        else:
            raise InvalidRequestError(f"unknown operation '{operation}'")
        if isinstance(result, Routed):
            return {**result.body, "noa": result.info.metadata()}
        return _with_metadata(client_chunks(result, include_usage(body)), result.info.metadata())


async def _with_metadata(
    chunks: AsyncGenerator[Body, None], metadata: Body
) -> AsyncGenerator[Body, None]:
    """Python callers' streams: the first chunk carries what ``x-noa-*`` headers say over HTTP."""
    first = True
    try:
        async for chunk in chunks:
            if first:
                chunk = {**chunk, "noa": metadata}
                first = False
            yield chunk
    finally:
        await chunks.aclose()
