"""What a route gives back: ``RouteInfo`` (the ``x-noa-*`` headers, and the price charged),
``Routed`` (a JSON answer with its route) and ``PrimedStream`` (a streamed one, with
``carries_content``: which of its chunks commit the router to it)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from noa.config import Price
from noa.errors import NoaError, UpstreamTimeoutError
from noa.providers.base import Body
from noa.routing.plan import Candidate
from noa.wire.usage import StreamTally


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """What the gateway reports in ``x-noa-*`` headers (picklable: crosses handles)."""

    model: str
    provider: str
    upstream: str
    attempts: int = 1
    fallbacks: int = 0
    cache: str | None = None  # hit-l1 | hit-l2 | hit-l3 | miss | bypass; None: no cache
    limits: dict[str, str] | None = None  # x-ratelimit-* of the caller's limits
    upstream_s: float | None = None  # JSON answers: time spent waiting on providers
    price: Price | None = None  # of the candidate that answered: what its usage costs

    @classmethod
    def of(cls, candidate: Candidate, attempts: int = 1, fallbacks: int = 0) -> RouteInfo:
        c = candidate
        return cls(c.model_id, c.provider, c.upstream, attempts, fallbacks, price=c.price)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for this usage at the price of the candidate that answered (0 when unpriced)."""
        if self.price is None:
            return 0.0
        return (prompt_tokens * self.price.input + completion_tokens * self.price.output) / 1e6

    def headers(self) -> dict[str, str]:
        headers = {
            "x-noa-provider": self.provider,
            "x-noa-model": self.model,
            "x-noa-attempts": str(self.attempts),
            "x-noa-fallbacks": str(self.fallbacks),
        }
        if self.cache is not None:
            headers["x-noa-cache"] = self.cache
        if self.limits:
            headers.update(self.limits)
        return headers

    def metadata(self) -> dict[str, Any]:
        """The same facts for Python callers (the ``noa`` field of handle results)."""
        return {
            "provider": self.provider,
            "model": self.model,
            "upstream": self.upstream,
            "attempts": self.attempts,
            "fallbacks": self.fallbacks,
            "cache": self.cache,
            "rate_limits": self.limits,
        }


@dataclass(frozen=True, slots=True)
class Routed:
    body: Body
    info: RouteInfo


class Outcome(Protocol):
    """What a stream reports its end to (the router's hold on the candidate that answers)."""

    def close(self, *, ok: bool | None, body: Body | None = None) -> None: ...


def carries_content(chunk: Body) -> bool:
    """Whether a streamed chunk says something of the answer: text, a tool or function call, a
    refusal, reasoning, log probabilities, a finish reason or usage. False only for the preamble
    upstreams send first (OpenAI's ``{"role": "assistant", "content": ""}`` delta, Azure's
    prompt-filter results with no choices); a chunk of a shape not known here counts as content.
    """
    if chunk.get("usage"):
        return True
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return True
    for choice in choices:
        if not isinstance(choice, dict):
            return True
        if choice.get("finish_reason") or choice.get("text") or choice.get("logprobs"):
            return True
        delta = choice.get("delta")
        if delta is None:
            continue
        if not isinstance(delta, dict):
            return True
        if any(value for name, value in delta.items() if name != "role"):
            return True
    return False


class PrimedStream:
    """An async iterator whose first items were already fetched (``held``: the chunks read
    before the router committed to the stream); ``aclose`` releases upstream.

    With ``idle_timeout_s``, a wait for the next chunk longer than that fails the stream.
    """

    def __init__(
        self,
        info: RouteInfo,
        held: Sequence[Body] | None,
        rest: AsyncIterator[Body],
        model: str | None,
        *,
        idle_timeout_s: float | None = None,
        lease: Outcome | None = None,
        tally: StreamTally | None = None,
        prompt_tokens: int = 0,
    ) -> None:
        self.info = info
        self._held = collections.deque(held or ())
        self._rest = rest
        self._model = model
        self._idle = idle_timeout_s
        self._lease = lease
        self._tally = tally  # counts what passes, for the lease (a provider quota) to charge
        self._prompt = prompt_tokens

    def __aiter__(self) -> PrimedStream:
        return self

    def relabel(self, **changes: Any) -> PrimedStream:
        """This stream, reported with ``changes`` to its route (``cache="miss"``, ...)."""
        self.info = replace(self.info, **changes)
        return self

    async def __anext__(self) -> Body:
        if self._held:
            item = self._held.popleft()
        else:
            item = await self._next()
        if self._model is not None:
            item["model"] = self._model
        if self._tally is not None:
            self._tally.observe(item)
        return item

    def _close_lease(self, ok: bool | None) -> None:
        if self._lease is None:
            return
        if self._tally is None:
            self._lease.close(ok=ok)
            return
        usage = self._tally.usage(self._prompt)  # what the stream used, cut or not
        self._lease.close(ok=ok, body={"usage": usage} if usage else None)

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
            self._close_lease(True)
            raise
        except NoaError:
            self._close_lease(False)
            raise

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._rest, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._close_lease(None)  # closed early (client gone): no verdict


async def empty_stream() -> AsyncGenerator[Body, None]:
    return
    yield  # pragma: no cover - makes this an async generator
