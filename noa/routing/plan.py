"""One request, planned once: what its model name resolved to, and what it may cost.

The registry resolves a name to a ``Target`` (the candidates that may answer, their prices, the
strategy that orders them, and what the response cache needs of the model). The service puts
the target, the validated body and the operation into a ``Plan``; admission, the cache, the
router and accounting all read that one plan, so a request's model is resolved once and its
tokens are estimated once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from noa.config import CachePolicy, Price, Strategy
from noa.routing.tokens import Tokens, estimate_tokens
from noa.wire.operations import Operation

Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One place a request may go: the model that answers, its provider and upstream name."""

    model_id: str
    provider: str
    upstream: str
    price: Price | None = None

    @property
    def key(self) -> str:
        """What breakers, latency and in-flight counts are kept per."""
        return f"{self.provider}/{self.upstream}"


@dataclass(frozen=True, slots=True)
class Target:
    """What a model name resolves to: the candidates, in configured order, and how to order
    them; the model's own id (aliases give their model's) and its cache settings."""

    name: str
    candidates: tuple[Candidate, ...]
    strategy: Strategy = "priority"
    model_id: str = ""  # "" for a name that is not a configured model: the name itself
    cache_policy: CachePolicy | None = None
    cache_shared: bool = False
    context_length: int | None = None  # the model's (a group's largest); None when unknown

    @property
    def model(self) -> str:
        """The id the cache keys, limits and permissions use."""
        return self.model_id or self.name


@dataclass(slots=True)
class Plan:
    """One request as every layer sees it (picklable: it crosses to the Router deployment)."""

    operation: Operation
    body: Body
    target: Target
    stream: bool = False
    _tokens: Tokens | None = field(default=None, repr=False)

    @property
    def tokens(self) -> Tokens:
        """Estimated on first use, then shared (admission and the router both read it)."""
        if self._tokens is None:
            self._tokens = estimate_tokens(self.body, self.target.context_length)
        return self._tokens

    def highest_price(self) -> tuple[float, float]:
        """The highest (input, output) USD per token among the candidates: what a reservation
        must assume when any of them may answer."""
        prices = [c.price for c in self.target.candidates if c.price is not None]
        if not prices:
            return 0.0, 0.0
        return max(p.input for p in prices) / 1e6, max(p.output for p in prices) / 1e6
