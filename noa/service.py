"""What a Gateway offers, independent of HTTP: validated requests in, responses out.

The FastAPI routes and the Python handle methods (``serve.get_app_handle("noa").chat``) both go
through this class, so a handle caller gets exactly what an HTTP caller gets: the same
validation, the same errors, the same response bodies.

Each request is planned once (``ModelRegistry.plan``: its model resolved, its candidates and
prices, its token estimate), and that plan is what admission, the response cache, the router
and accounting read.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from noa.access.accounting import Accounting
from noa.access.identity import MASTER, Principal
from noa.cache.response import BODY_FIELD, Policy, ResponseCache, requested_policy
from noa.errors import ModelNotFoundError
from noa.observability.tracing import Tracing, record_error
from noa.routing.plan import Plan
from noa.routing.registry import ModelRegistry
from noa.routing.results import PrimedStream, Routed
from noa.wire.operations import Operation, streamed, validated

Body = dict[str, Any]
Result = Routed | PrimedStream


class RouterLike(Protocol):
    """The router core in this process, or ``RemoteRouter`` over the Router deployment."""

    async def route(self, plan: Plan) -> Result: ...


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


@dataclass(eq=False)
class NoaService:
    """Every operation, and the models, over a router (in-process or remote), behind the
    response cache when there is one.

    ``asked`` is the policy the request asked of the cache in its ``x-noa-cache`` header (the
    body's ``noa_cache`` field is read here). ``principal`` is who asks (the HTTP layer
    authenticated it; Python callers inside the cluster are trusted like the master key): its
    limits and budget are checked before anything else is spent, its cache entries are its
    tenant's, and its usage is recorded when the answer is complete.
    """

    router: RouterLike
    registry: ModelRegistry
    cache: ResponseCache | None = None
    accounting: Accounting | None = None
    tracing: Tracing = field(default_factory=Tracing)

    async def answer(
        self,
        operation: Operation,
        body: Body,
        asked: str | None = None,
        principal: Principal | None = None,
    ) -> Result:
        """The answer to a validated request body (``noa.wire.operations.validated``)."""
        if not self.tracing.enabled:
            return await self._settled(operation, body, asked, principal)
        what = {
            "noa.operation": operation.value,
            "noa.model": str(body.get("model")),
            "noa.stream": streamed(operation, body),
        }
        with self.tracing.span("noa.route", **what) as span:
            try:
                result = await self._settled(operation, body, asked, principal)
            except BaseException as e:
                record_error(span, e)
                raise
            if span is not None:
                for key, value in result.info.metadata().items():
                    if isinstance(value, str | int):
                        span.set_attribute(f"noa.{key}", value)
            return result

    async def _settled(
        self, operation: Operation, body: Body, asked: str | None, principal: Principal | None
    ) -> Result:
        """The plan, its admission, its (cached) answer and its accounting."""
        principal = principal or MASTER
        policy = requested_policy(asked, body)  # a bad one is a 400 before anything is spent
        body.pop(BODY_FIELD, None)  # NOA's own field: never sent upstream
        plan = self.registry.plan(operation, body, streamed(operation, body))
        if self.accounting is None:
            return await self._cached(plan, policy, principal.tenant)
        meter = await self.accounting.admit(principal, plan)
        try:
            result = await self._cached(plan, policy, principal.tenant)
        except BaseException as e:
            await meter.failed(e)
            raise
        if isinstance(result, PrimedStream):
            return meter.watch(result)
        return await meter.answered(result)

    async def _cached(self, plan: Plan, asked: Policy | None, tenant: str | None) -> Result:
        if self.cache is None:
            return await self.router.route(plan)
        lookup = self.cache.decide(plan, asked, tenant)
        hit = await self.cache.lookup(lookup, plan.stream)
        if hit is not None:
            return hit
        return await self.cache.through(lookup, plan.stream, lambda: self.router.route(plan))

    def list_models(self, principal: Principal | None = None) -> Body:
        """The models ``principal`` may use (every one for the master key and Python callers)."""
        cards = self.registry.list_models()
        if principal is not None and principal.models is not None:
            cards = [card for card in cards if principal.allows(card["id"])]
        return {"object": "list", "data": cards}

    def get_model(self, model_id: str, principal: Principal | None = None) -> Body:
        """One model's card; a model ``principal`` may not use is a 404 like an unknown one."""
        card = self.registry.get_model(model_id)
        if principal is not None and not principal.allows(card["id"]):
            raise ModelNotFoundError(f"The model `{model_id}` does not exist", param="model")
        return card

    # Python callers (DeploymentHandles) send the same JSON bodies as HTTP clients.

    async def call(self, operation: Operation, body: Any) -> Body | AsyncIterator[Body]:
        """The answer to a raw body, as a dict, or chunks if streamed; the route's facts in
        the ``noa`` field (of the first chunk), as ``x-noa-*`` headers say over HTTP."""
        request = validated(operation, body)
        result = await self.answer(operation, request)
        if isinstance(result, Routed):
            return {**result.body, "noa": result.info.metadata()}
        return _with_metadata(client_chunks(result, include_usage(request)), result.info.metadata())


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
