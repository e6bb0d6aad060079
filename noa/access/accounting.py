"""Around each answer: admission before it, reconciliation and a usage record after it.

``Accounting.admit`` returns the request's ``Meter``: it settles a plain answer when it
returns, a stream when it ends (its usage chunk, its time to first token), completed or not,
and a failure with its status. Settling never fails a request: a limiter or database that went
away costs a warning, not the answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from typing import Any

from noa import context
from noa.access.admission import Gatekeeper, Ticket
from noa.access.identity import Principal
from noa.errors import NoaError
from noa.observability.metrics import Metrics
from noa.routing.plan import Plan
from noa.routing.results import PrimedStream, Routed, RouteInfo
from noa.storage.usage import UsageRecord, UsageRecorder
from noa.wire.operations import Operation
from noa.wire.usage import StreamTally

Body = dict[str, Any]
Clock = Callable[[], float]
logger = logging.getLogger("noa.usage")


@dataclass(eq=False)
class Accounting:
    gate: Gatekeeper
    usage: UsageRecorder | None = None
    clock: Clock = time.perf_counter
    metrics: Metrics | None = None

    async def admit(self, principal: Principal, plan: Plan) -> Meter:
        """The request's meter, once its limits and budget allow it (429 / 403 otherwise)."""
        ticket = await self.gate.admit(principal, plan)
        return Meter(self, principal, plan, ticket, self.clock())

    async def _settle(
        self,
        meter: Meter,
        route: RouteInfo | None,
        usage: Body | None,
        status: int,
        ttft: float | None,
    ) -> None:
        try:
            prompt, completion, cost = self.gate.cost(route, usage)
            if meter.ticket is not None:
                await self.gate.reconcile(meter.ticket, prompt + completion, cost)
        except Exception as e:  # the answer is already on its way: never fail it here
            logger.warning("could not settle a request's usage: %s", e)
            cost, prompt, completion = 0.0, 0, 0
        now = self.clock()
        started = meter.started
        served_by_cache = route is not None and (route.cache or "").startswith("hit")
        if self.metrics is not None and route is not None and not served_by_cache:
            _count(
                self.metrics, route, status, prompt, completion, cost, now - started, ttft, started
            )
            if route.upstream_s is not None:  # JSON answers: the rest is the gateway's own time
                overhead = max(0.0, now - started - route.upstream_s)
                self.metrics["noa_gateway_overhead_seconds"].observe(
                    (meter.operation.value,), overhead
                )
        if self.usage is None:
            return
        principal = meter.principal
        self.usage.record(
            UsageRecord(
                operation=meter.operation.value,
                status=status,
                key_id=principal.id if principal.kind in ("key", "jwt") else None,
                team=principal.team,
                model=route.model if route else None,
                provider=route.provider if route else None,
                upstream=route.upstream if route else None,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_usd=cost,
                latency_ms=round((now - started) * 1000, 3),
                ttft_ms=None if ttft is None else round((ttft - started) * 1000, 3),
                cache=route.cache if route else None,
                correlation_id=context.current(),
            )
        )


@dataclass(slots=True)
class Meter:
    """One admitted request's accounts: what it reserved (``ticket``, None when nothing limits
    it) and when it started; settled exactly once, by whichever of its methods ends it."""

    accounting: Accounting
    principal: Principal
    plan: Plan
    ticket: Ticket | None
    started: float

    @property
    def operation(self) -> Operation:
        return self.plan.operation

    async def settle(
        self,
        route: RouteInfo | None,
        usage: Body | None,
        status: int,
        ttft: float | None = None,
    ) -> None:
        await self.accounting._settle(self, route, usage, status, ttft)

    async def failed(self, error: BaseException) -> None:
        status = error.status_code if isinstance(error, NoaError) else 500
        await self.settle(None, None, status)

    async def answered(self, result: Routed) -> Routed:
        """A JSON answer settled, with the caller's ``x-ratelimit-*`` headers."""
        usage = result.body.get("usage")
        if not usage:  # an upstream that reports none is charged what its answer holds
            tally = StreamTally()
            tally.observe_body(result.body)
            usage = tally.usage(self.plan.tokens.prompt)
        await self.settle(result.info, usage, 200)
        info = self._with_limits(result.info)
        return result if info is result.info else Routed(result.body, info)

    def watch(self, stream: PrimedStream) -> PrimedStream:
        """The stream, settled when it ends however it ends."""
        return PrimedStream(self._with_limits(stream.info), None, self._watched(stream), None)

    async def _watched(self, stream: PrimedStream) -> AsyncGenerator[Body, None]:
        """Settled with the provider's usage chunk, or, for a stream cut before it (the client
        left, the upstream failed), with what passed: the prompt and the text seen."""
        clock = self.accounting.clock
        ttft: float | None = None
        tally = StreamTally()
        status = 499  # the client left before the end
        try:
            async for chunk in stream:
                if ttft is None:
                    ttft = clock()
                tally.observe(chunk)
                yield chunk
            status = 200
        except NoaError as e:
            status = e.status_code
            raise
        finally:
            await stream.aclose()
            # opened means the upstream read the prompt, whether or not a chunk got through
            usage = tally.reported or tally.usage(self.plan.tokens.prompt)
            await self.settle(stream.info, usage, status, ttft)

    def _with_limits(self, info: RouteInfo) -> RouteInfo:
        """The route with the caller's ``x-ratelimit-*`` headers, when limits applied."""
        if self.ticket is None or not self.ticket.headers:
            return info
        return replace(info, limits=self.ticket.headers)


def _count(
    metrics: Metrics,
    route: RouteInfo,
    status: int,
    prompt: int,
    completion: int,
    cost: float,
    elapsed: float,
    ttft: float | None,
    started: float,
) -> None:
    """The provider's share of the metrics (answers from the response cache are counted by the
    cache's own series, not as provider calls)."""
    labels = (route.provider, route.model)
    metrics["ai_provider_requests_total"].inc((*labels, str(status)))
    metrics["ai_provider_latency_seconds"].observe(labels, elapsed)
    if cost:
        metrics["ai_provider_cost_total"].inc(labels, cost)
    if prompt:
        metrics["ai_provider_tokens_total"].inc((*labels, "input"), prompt)
    if completion:
        metrics["ai_provider_tokens_total"].inc((*labels, "output"), completion)
    if ttft is not None:
        metrics["ai_provider_time_to_first_token_seconds"].observe(labels, ttft - started)
    if route.fallbacks:
        metrics["noa_fallbacks_total"].inc((route.model,))
