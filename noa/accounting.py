"""Around each answer: admission before it, reconciliation and a usage record after it.

A plain answer is settled when it returns; a stream when it ends (its usage chunk, its time to
first token), completed or not. Settling never fails a request: a limiter or database that went
away costs a warning, not the answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace
from typing import Any

from noa.admission import Gatekeeper, Ticket
from noa.errors import NoaError
from noa.http import context
from noa.identity import Principal
from noa.metrics import Metrics
from noa.router import Operation, PrimedStream, Routed, RouteInfo
from noa.usage import UsageRecord, UsageRecorder

Body = dict[str, Any]
Clock = Callable[[], float]
logger = logging.getLogger("noa.usage")


class Accounting:
    def __init__(
        self,
        gate: Gatekeeper,
        usage: UsageRecorder | None = None,
        clock: Clock = time.perf_counter,
        metrics: Metrics | None = None,
    ) -> None:
        self.gate = gate
        self.usage = usage
        self.clock = clock
        self.metrics = metrics

    async def admit(
        self, principal: Principal, operation: Operation, body: Body, stream: bool
    ) -> Ticket | None:
        return await self.gate.admit(principal, operation, body, stream)

    async def finish(
        self,
        principal: Principal,
        operation: Operation,
        ticket: Ticket | None,
        started: float,
        route: RouteInfo | None,
        usage: Body | None,
        status: int,
        ttft: float | None = None,
    ) -> None:
        try:
            prompt, completion, cost = self.gate.cost(route, usage, operation)
            if ticket is not None:
                await self.gate.reconcile(ticket, prompt + completion, cost)
        except Exception as e:  # the answer is already on its way: never fail it here
            logger.warning("could not settle a request's usage: %s", e)
            cost, prompt, completion = 0.0, 0, 0
        now = self.clock()
        served_by_cache = route is not None and (route.cache or "").startswith("hit")
        if self.metrics is not None and route is not None and not served_by_cache:
            _count(
                self.metrics, route, status, prompt, completion, cost, now - started, ttft, started
            )
            if route.upstream_s is not None:  # JSON answers: the rest is the gateway's own time
                overhead = max(0.0, now - started - route.upstream_s)
                self.metrics["noa_gateway_overhead_seconds"].observe((operation,), overhead)
        if self.usage is None:
            return
        self.usage.record(
            UsageRecord(
                operation=operation,
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

    async def failed(
        self,
        principal: Principal,
        operation: Operation,
        ticket: Ticket | None,
        started: float,
        error: BaseException,
    ) -> None:
        status = error.status_code if isinstance(error, NoaError) else 500
        await self.finish(principal, operation, ticket, started, None, None, status)

    def answered(self, result: Routed, ticket: Ticket | None) -> Routed:
        info = _with_limits(result.info, ticket)
        return result if info is result.info else Routed(result.body, info)

    def stream(
        self,
        stream: PrimedStream,
        principal: Principal,
        operation: Operation,
        ticket: Ticket | None,
        started: float,
    ) -> PrimedStream:
        return PrimedStream(
            _with_limits(stream.info, ticket),
            None,
            self._watched(stream, principal, operation, ticket, started),
            None,
        )

    async def _watched(
        self,
        stream: PrimedStream,
        principal: Principal,
        operation: Operation,
        ticket: Ticket | None,
        started: float,
    ) -> AsyncGenerator[Body, None]:
        ttft: float | None = None
        usage: Body | None = None
        status = 499  # the client left before the end
        try:
            async for chunk in stream:
                if ttft is None:
                    ttft = self.clock()
                if chunk.get("usage"):
                    usage = chunk["usage"]
                yield chunk
            status = 200
        except NoaError as e:
            status = e.status_code
            raise
        finally:
            await stream.aclose()
            await self.finish(
                principal, operation, ticket, started, stream.info, usage, status, ttft
            )


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


def _with_limits(info: RouteInfo, ticket: Ticket | None) -> RouteInfo:
    """The route with the caller's ``x-ratelimit-*`` headers, when limits applied."""
    if ticket is None or not ticket.headers:
        return info
    return replace(info, limits=ticket.headers)
