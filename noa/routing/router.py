"""The router core: try a plan's candidates in order, say what happened.

For each candidate (ordered by the target's strategy): skip it while its circuit is open or its
provider account is at its configured limits; otherwise call it, retrying the same candidate on
retryable failures with exponential backoff and jitter (or the upstream's Retry-After), then fall
back to the next. Client errors (400, 404, 413...) end the request at once: another provider would
refuse the same request. A deadline bounds the whole chain.

Streams are *primed*: the router holds a candidate's chunks until one carries content (text, a
tool call, a finish reason...; not OpenAI's opening role delta) before handing the stream back,
so a failure before the first token moves on to the next candidate invisibly, the held chunks
dropped; after it, the failure reaches the client as an SSE error event. A stream silent for
longer than the idle timeout fails the same way.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from noa.config import RoutingConfig
from noa.errors import NoaError, UpstreamError, UpstreamTimeoutError
from noa.observability.tracing import Tracing, record_error
from noa.providers.base import Body, Provider
from noa.routing.attempts import Hold, Skip, deadline_error, exhausted_error
from noa.routing.breakers.board import Breakers
from noa.routing.plan import Candidate, Plan
from noa.routing.quota import ProviderQuota
from noa.routing.results import PrimedStream, Routed, RouteInfo, carries_content, empty_stream
from noa.routing.selection import TrafficStats, order
from noa.routing.tokens import Tokens
from noa.wire.usage import StreamTally

Clock = Callable[[], float]
T = TypeVar("T")
Attempt = Callable[[Provider, Candidate, Hold, float], Awaitable[T]]
logger = logging.getLogger("noa.router")
NO_TOKENS = Tokens(0, 0, False)
MAX_HELD = 32  # chunks held while priming a stream; past that it is committed to anyway


class Router:
    """Routes planned requests to providers, with fallback along the plan's candidates."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        rename_models: frozenset[str] = frozenset(),
        routing: RoutingConfig | None = None,
        quotas: Mapping[str, ProviderQuota] | None = None,
        breakers: Breakers | None = None,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        tracing: Tracing | None = None,
    ) -> None:
        self.tracing = tracing or Tracing()
        self._providers = dict(providers)
        # Providers whose answers name a file rather than a model (llama.cpp) report NOA's id.
        self._rename = rename_models
        self.routing = routing or RoutingConfig()
        self._quotas = dict(quotas or {})
        self._clock = clock
        self.breakers = breakers or Breakers(self.routing.breaker, clock=clock)
        self.stats = TrafficStats()
        self._sleep = sleep
        self._rng = rng

    async def route(self, plan: Plan) -> Routed | PrimedStream:
        """The plan's answer: ``Routed`` (JSON) or, for a streamed plan, a primed stream."""
        if plan.stream:
            return await self.open(plan)
        return await self.answer(plan)

    # -- the chain ---------------------------------------------------------------------------

    async def _admit(self, candidate: Candidate, tokens: int, streamed: bool) -> Hold:
        if not await self.breakers.admit(candidate.key):
            wait = self.breakers.retry_after([candidate.key])
            raise Skip("circuit open", wait, "circuit_open")
        quota = self._quotas.get(candidate.provider)
        slot = None
        if quota is not None:
            slot = quota.try_acquire(tokens)
            if slot is None:
                self.breakers.release(candidate.key)
                wait = quota.retry_after(tokens)
                raise Skip("at the provider's configured limits", wait, "provider_quota")
        stats = self.stats.get(candidate.key)
        stats.in_flight += 1
        return Hold(candidate, self.breakers, stats, slot, self._clock, streamed)

    def _backoff(self, retry: int) -> float:
        base = self.routing.backoff_base_s * 2**retry
        return min(self.routing.backoff_cap_s, base + base * 0.3 * self._rng())

    async def _run(self, plan: Plan, attempt: Attempt[T]) -> tuple[T, Candidate, int, int]:
        """The first success of ``attempt`` along the plan: (result, candidate, attempts,
        candidates passed over). ``attempt`` owns the hold once it returns."""
        r = self.routing
        target = plan.target
        deadline = self._clock() + r.deadline_s
        needs_tokens = target.strategy == "least-cost" or any(
            c.provider in self._quotas for c in target.candidates
        )
        tokens = plan.tokens if needs_tokens else NO_TOKENS
        ordered = order(
            target.candidates,
            target.strategy,
            self.stats,
            streamed=plan.stream,
            tokens=(tokens.prompt, tokens.completion),
            down=self.breakers.down,
        )
        reasons: list[str] = []
        errors: list[NoaError] = []
        skips: list[Skip] = []
        attempts = 0
        for index, candidate in enumerate(ordered):
            provider = self._providers.get(candidate.provider)
            if provider is None:
                reasons.append(f"{candidate.key}: provider not running")
                continue
            for retry in range(r.retries + 1):
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise deadline_error(r.deadline_s, reasons, attempts)
                try:
                    hold = await self._admit(candidate, tokens.total, plan.stream)
                except Skip as skip:
                    skips.append(skip)
                    reasons.append(f"{candidate.key}: {skip}")
                    break
                attempts += 1
                where = {"noa.provider": candidate.provider, "noa.upstream": candidate.upstream}
                try:
                    with self.tracing.span("noa.provider", **where) as span:
                        try:
                            async with asyncio.timeout(remaining):
                                result = await attempt(provider, candidate, hold, remaining)
                        except BaseException as e:
                            record_error(span, e)
                            raise
                except TimeoutError:
                    hold.close(ok=False)
                    reasons.append(f"{candidate.key}: no answer within the deadline")
                    raise deadline_error(r.deadline_s, reasons, attempts) from None
                except UpstreamError as e:
                    hold.close(ok=False)
                    errors.append(e)
                    reasons.append(f"{candidate.key}: {e.message}")
                    last = index == len(ordered) - 1
                    delay = self._retry_delay(e, retry, deadline, last)
                    if delay is None:
                        break
                    await self._sleep(delay)
                    continue
                except NoaError:
                    hold.close(ok=True)  # the upstream answered: the request was at fault
                    raise
                except BaseException:
                    hold.close(ok=None)
                    raise
                return result, candidate, attempts, index
        raise exhausted_error(target, reasons, errors, skips, attempts)

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

    # -- calls -------------------------------------------------------------------------------

    def _model_for(self, candidate: Candidate) -> str | None:
        return candidate.model_id if candidate.provider in self._rename else None

    async def answer(self, plan: Plan) -> Routed:
        """The first JSON answer along the plan's candidates."""
        upstream_s = 0.0  # time spent waiting on providers, failed attempts included

        async def attempt(
            provider: Provider, candidate: Candidate, hold: Hold, remaining: float
        ) -> Body:
            nonlocal upstream_s
            began = self._clock()
            try:
                body = await provider.call(plan.operation, plan.body, candidate.upstream)
            finally:
                upstream_s += self._clock() - began
            hold.close(ok=True, body=body)
            return body

        body, candidate, attempts, fallbacks = await self._run(plan, attempt)
        model = self._model_for(candidate)
        if model is not None:
            body["model"] = model
        info = RouteInfo.of(candidate, attempts, fallbacks)
        return Routed(body, replace(info, upstream_s=upstream_s))

    async def open(self, plan: Plan) -> PrimedStream:
        """The first stream along the plan's candidates that sends a chunk with content."""
        idle = self.routing.stream_idle_timeout_s

        async def attempt(
            provider: Provider, candidate: Candidate, hold: Hold, remaining: float
        ) -> tuple[list[Body], AsyncIterator[Body], Hold]:
            chunks = provider.stream(plan.operation, plan.body, candidate.upstream)
            iterator = chunks.__aiter__()
            deadline = self._clock() + remaining
            held: list[Body] = []
            try:
                while not held or (not carries_content(held[-1]) and len(held) < MAX_HELD):
                    left = deadline - self._clock()
                    async with asyncio.timeout(min(idle, left)):
                        held.append(await iterator.__anext__())
            except StopAsyncIteration:
                pass  # the stream ended: what it sent is the answer
            except TimeoutError:
                await _close(iterator)
                if idle >= left:
                    raise  # the deadline: the chain ends
                raise UpstreamTimeoutError(
                    f"provider '{candidate.provider}' sent nothing for {idle:g} s",
                    provider=candidate.provider,
                    code="stream_stalled",
                ) from None
            except BaseException:
                await _close(iterator)  # what was held is dropped: the client saw none of it
                raise
            hold.first_token()
            return held, iterator, hold

        (held, iterator, hold), candidate, attempts, fallbacks = await self._run(plan, attempt)
        info = RouteInfo.of(candidate, attempts, fallbacks)
        if not held:
            hold.close(ok=True)
            return PrimedStream(info, None, empty_stream(), None)
        metered = hold.slot is not None  # a provider quota: charged what the stream used
        return PrimedStream(
            info,
            held,
            iterator,
            self._model_for(candidate),
            idle_timeout_s=idle,
            lease=hold,
            tally=StreamTally() if metered else None,
            prompt_tokens=plan.tokens.prompt if metered else 0,
        )

    # -- health ------------------------------------------------------------------------------

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
