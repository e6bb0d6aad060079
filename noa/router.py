"""The router core: resolve a request's model to candidates, try them in order, say what happened.

For each candidate (ordered by the plan's strategy): skip it while its circuit is open or its
provider account is at its configured limits; otherwise call it, retrying the same candidate on
retryable failures with exponential backoff and jitter (or the upstream's Retry-After), then fall
back to the next. Client errors (400, 404, 413...) end the request at once: another provider would
refuse the same request. A deadline bounds the whole chain.

Streams are *primed*: the router waits for a candidate's first chunk before handing the stream
back, so a failure before the first token moves on to the next candidate invisibly; after it, the
failure reaches the client as an SSE error event. A stream silent for longer than the idle
timeout fails the same way.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from noa.breaker import BreakerBoard
from noa.config import RoutingConfig
from noa.errors import (
    NoaError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
)
from noa.providers.base import Body, Provider
from noa.quota import ProviderQuota, Ticket, estimate_tokens, used_tokens
from noa.registry import Candidate, ModelRegistry, Plan
from noa.route_info import Routed, RouteInfo  # re-exported: what a route reports
from noa.selection import CandidateStats, StatsBoard, order
from noa.tracing import Tracing, record_error

Operation = Literal["chat", "completions", "embeddings"]
Clock = Callable[[], float]
T = TypeVar("T")
logger = logging.getLogger("noa.router")


@dataclass(slots=True)
class _Lease:
    """One admitted call to a candidate: its quota ticket, in-flight count and timing."""

    router: Router
    candidate: Candidate
    stats: CandidateStats
    ticket: Ticket | None
    started: float
    streamed: bool
    open: bool = field(default=True)

    def first_token(self) -> None:
        self.stats.observe(self.router._clock() - self.started, streamed=True)
        self.router.breakers.record(self.candidate.key, True)

    def close(self, *, ok: bool | None, body: Body | None = None) -> None:
        """``ok`` None: the call never got an answer either way (cancelled)."""
        if not self.open:
            return
        self.open = False
        self.stats.in_flight -= 1
        if self.ticket is not None:
            self.ticket.finish(used_tokens(body) if body is not None else None)
        if ok is None:
            self.router.breakers.release(self.candidate.key)
            return
        if ok:
            self.stats.successes += 1
            if not self.streamed:
                self.stats.observe(self.router._clock() - self.started, streamed=False)
                self.router.breakers.record(self.candidate.key, True)
        else:
            self.stats.failures += 1
            self.router.breakers.record(self.candidate.key, False)


class PrimedStream:
    """An async iterator whose first item was already fetched; ``aclose`` releases upstream.

    With ``idle_timeout_s``, a wait for the next chunk longer than that fails the stream.
    """

    def __init__(
        self,
        info: RouteInfo,
        first: Body | None,
        rest: AsyncIterator[Body],
        model: str | None,
        *,
        idle_timeout_s: float | None = None,
        lease: _Lease | None = None,
    ) -> None:
        self.info = info
        self._first = first
        self._rest = rest
        self._model = model
        self._idle = idle_timeout_s
        self._lease = lease

    def __aiter__(self) -> PrimedStream:
        return self

    async def __anext__(self) -> Body:
        if self._first is not None:
            item, self._first = self._first, None
        else:
            item = await self._next()
        if self._model is not None:
            item["model"] = self._model
        return item

    async def _next(self) -> Body:
        try:
            if self._idle is None:
                return await self._rest.__anext__()
            try:
                async with asyncio.timeout(self._idle):
                    return await self._rest.__anext__()
            except TimeoutError:
                raise UpstreamTimeoutError(
                    f"the stream from provider '{self.info.provider}' stalled for more than"
                    f" {self._idle:g} s",
                    provider=self.info.provider,
                    code="stream_stalled",
                ) from None
        except StopAsyncIteration:
            if self._lease is not None:
                self._lease.close(ok=True)
            raise
        except NoaError:
            if self._lease is not None:
                self._lease.close(ok=False)
            raise

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._rest, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            if self._lease is not None:
                self._lease.close(ok=None)  # closed early (client gone): no verdict


async def _empty() -> AsyncGenerator[Body, None]:
    return
    yield  # pragma: no cover - makes this an async generator


class _Skip(Exception):
    """A candidate passed over without a call: circuit open or provider at its limits."""

    def __init__(self, reason: str, retry_after: float, kind: str) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.kind = kind


class Router:
    """Routes OpenAI-shaped requests to providers by the registry's plans, with fallback."""

    def __init__(
        self,
        registry: ModelRegistry,
        providers: Mapping[str, Provider],
        *,
        rename_models: frozenset[str] = frozenset(),
        routing: RoutingConfig | None = None,
        quotas: Mapping[str, ProviderQuota] | None = None,
        breakers: BreakerBoard | None = None,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        tracing: Tracing | None = None,
    ) -> None:
        self.registry = registry
        self.tracing = tracing or Tracing()
        self._providers = dict(providers)
        # Providers whose answers name a file rather than a model (llama.cpp) report NOA's id.
        self._rename = rename_models
        self.routing = routing or RoutingConfig()
        self._quotas = dict(quotas or {})
        self._clock = clock
        self.breakers = breakers or BreakerBoard(self.routing.breaker, clock=clock)
        self.stats = StatsBoard()
        self.down: frozenset[str] = frozenset()  # providers the active checks report down
        self._sleep = sleep
        self._rng = rng

    # -- the chain ---------------------------------------------------------------------------

    async def _admit(self, candidate: Candidate, tokens: int, streamed: bool) -> _Lease:
        if not await self.breakers.admit(candidate.key):
            wait = self.breakers.retry_after([candidate.key])
            raise _Skip("circuit open", wait, "circuit_open")
        quota = self._quotas.get(candidate.provider)
        ticket = None
        if quota is not None:
            ticket = quota.try_acquire(tokens)
            if ticket is None:
                self.breakers.release(candidate.key)
                wait = quota.retry_after(tokens)
                raise _Skip("at the provider's configured limits", wait, "provider_quota")
        stats = self.stats.get(candidate.key)
        stats.in_flight += 1
        return _Lease(self, candidate, stats, ticket, self._clock(), streamed)

    def _backoff(self, retry: int) -> float:
        base = self.routing.backoff_base_s * 2**retry
        return min(self.routing.backoff_cap_s, base + base * 0.3 * self._rng())

    async def _run(
        self,
        plan: Plan,
        request: Body,
        streamed: bool,
        attempt: Callable[[Provider, Candidate, _Lease, float], Awaitable[T]],
    ) -> tuple[T, Candidate, int, int]:
        """The first success of ``attempt`` along the plan: (result, candidate, attempts,
        candidates passed over). ``attempt`` owns the lease once it returns."""
        r = self.routing
        deadline = self._clock() + r.deadline_s
        needs_tokens = plan.strategy == "least-cost" or any(
            c.provider in self._quotas for c in plan.candidates
        )
        prompt, completion = estimate_tokens(request) if needs_tokens else (0, 0)
        ordered = order(
            plan.candidates,
            plan.strategy,
            self.stats,
            streamed=streamed,
            tokens=(prompt, completion),
            down=self.down,
        )
        reasons: list[str] = []
        errors: list[NoaError] = []
        skips: list[_Skip] = []
        attempts = 0
        for index, candidate in enumerate(ordered):
            provider = self._providers.get(candidate.provider)
            if provider is None:
                reasons.append(f"{candidate.key}: provider not running")
                continue
            for retry in range(r.retries + 1):
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise self._deadline(reasons, attempts)
                try:
                    lease = await self._admit(candidate, prompt + completion, streamed)
                except _Skip as skip:
                    skips.append(skip)
                    reasons.append(f"{candidate.key}: {skip}")
                    break
                attempts += 1
                where = {"noa.provider": candidate.provider, "noa.upstream": candidate.upstream}
                try:
                    with self.tracing.span("noa.provider", **where) as span:
                        try:
                            async with asyncio.timeout(remaining):
                                result = await attempt(provider, candidate, lease, remaining)
                        except BaseException as e:
                            record_error(span, e)
                            raise
                except TimeoutError:
                    lease.close(ok=False)
                    reasons.append(f"{candidate.key}: no answer within the deadline")
                    raise self._deadline(reasons, attempts) from None
                except UpstreamError as e:
                    lease.close(ok=False)
                    errors.append(e)
                    reasons.append(f"{candidate.key}: {e.message}")
                    last = index == len(ordered) - 1
                    delay = self._retry_delay(e, retry, deadline, last)
                    if delay is None:
                        break
                    await self._sleep(delay)
                    continue
                except NoaError:
                    lease.close(ok=True)  # the upstream answered: the request was at fault
                    raise
                except BaseException:
                    lease.close(ok=None)
                    raise
                return result, candidate, attempts, index
        raise self._exhausted(plan, reasons, errors, skips, attempts)

    def _retry_delay(
        self, error: UpstreamError, retry: int, deadline: float, last: bool
    ) -> float | None:
        """Seconds to wait before retrying the same candidate, or None to move on.

        A timeout already cost the whole per-call timeout: the next candidate goes first."""
        r = self.routing
        if not error.retryable or retry >= r.retries:
            return None
        if isinstance(error, UpstreamTimeoutError) and not last:
            return None
        if error.retry_after is not None:
            if error.retry_after > r.max_retry_after_s:
                return None
            delay = error.retry_after
        else:
            delay = self._backoff(retry)
        return delay if self._clock() + delay < deadline else None

    def _deadline(self, reasons: list[str], attempts: int) -> UpstreamTimeoutError:
        return UpstreamTimeoutError(
            f"No answer within the request deadline of {self.routing.deadline_s:g} s after"
            f" {attempts} attempt(s): {'; '.join(reasons) or 'none'}",
            code="deadline_exceeded",
        )

    def _exhausted(
        self,
        plan: Plan,
        reasons: list[str],
        errors: list[NoaError],
        skips: list[_Skip],
        attempts: int,
    ) -> NoaError:
        if attempts == 0 and skips:
            wait = max(1.0, min(s.retry_after for s in skips))
            kinds = {s.kind for s in skips}
            what = "circuits are open" if kinds == {"circuit_open"} else "are unavailable"
            return ServiceUnavailableError(
                f"Every provider of `{plan.name}` {what}: {'; '.join(reasons)}",
                code=kinds.pop() if len(kinds) == 1 else "providers_unavailable",
                retry_after=wait,
            )
        if len(errors) == 1 and len(reasons) == 1:
            return errors[0]
        message = f"All providers of `{plan.name}` failed ({attempts} attempts): " + "; ".join(
            reasons
        )
        if errors and all(isinstance(e, UpstreamTimeoutError) for e in errors):
            return UpstreamTimeoutError(message, code="all_providers_timed_out")
        return UpstreamError(message, code="all_providers_failed")

    # -- calls -------------------------------------------------------------------------------

    def _plan(self, request: Body, op: Operation, stream: bool) -> Plan:
        return self.registry.resolve(request["model"], op, stream=stream)

    def _model_for(self, candidate: Candidate) -> str | None:
        return candidate.model_id if candidate.provider in self._rename else None

    async def _call(self, op: Operation, method: str, request: Body) -> Routed:
        plan = self._plan(request, op, stream=False)

        upstream_s = 0.0  # time spent waiting on providers, failed attempts included

        async def attempt(
            provider: Provider, candidate: Candidate, lease: _Lease, remaining: float
        ) -> Body:
            nonlocal upstream_s
            began = self._clock()
            try:
                body: Body = await getattr(provider, method)(request, candidate.upstream)
            finally:
                upstream_s += self._clock() - began
            lease.close(ok=True, body=body)
            return body

        body, candidate, attempts, fallbacks = await self._run(plan, request, False, attempt)
        model = self._model_for(candidate)
        if model is not None:
            body["model"] = model
        info = RouteInfo.of(candidate, attempts, fallbacks)
        return Routed(body, replace(info, upstream_s=upstream_s))

    async def _open(self, op: Operation, method: str, request: Body) -> PrimedStream:
        plan = self._plan(request, op, stream=True)
        idle = self.routing.stream_idle_timeout_s

        async def attempt(
            provider: Provider, candidate: Candidate, lease: _Lease, remaining: float
        ) -> tuple[Body | None, AsyncIterator[Body], _Lease]:
            iterator = getattr(provider, method)(request, candidate.upstream).__aiter__()
            try:
                async with asyncio.timeout(min(idle, remaining)):
                    first: Body | None = await iterator.__anext__()
            except StopAsyncIteration:
                first = None
            except TimeoutError:
                await _close(iterator)
                if idle >= remaining:
                    raise  # the deadline: the chain ends
                raise UpstreamTimeoutError(
                    f"provider '{candidate.provider}' sent nothing for {idle:g} s",
                    provider=candidate.provider,
                    code="stream_stalled",
                ) from None
            except BaseException:
                await _close(iterator)
                raise
            lease.first_token()
            return first, iterator, lease

        (first, iterator, lease), candidate, attempts, fallbacks = await self._run(
            plan, request, True, attempt
        )
        info = RouteInfo.of(candidate, attempts, fallbacks)
        if first is None:
            lease.close(ok=True)
            return PrimedStream(info, None, _empty(), None)
        return PrimedStream(
            info, first, iterator, self._model_for(candidate), idle_timeout_s=idle, lease=lease
        )

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

    # -- health ------------------------------------------------------------------------------

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

    def snapshot(self) -> dict[str, Any]:
        """Breakers and traffic stats of this router, per ``provider/upstream``."""
        return {"breakers": self.breakers.snapshot(), "stats": self.stats.snapshot()}

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()


async def _close(iterator: AsyncIterator[Body]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a failed stream: its own error already counts
            logger.debug("closing a failed upstream stream", exc_info=True)
