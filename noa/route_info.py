"""What the router reports about a route: ``RouteInfo`` (the ``x-noa-*`` headers) and ``Routed``
(a JSON answer with its route)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from noa.providers.base import Body
from noa.registry import Candidate


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

    @classmethod
    def of(cls, candidate: Candidate, attempts: int = 1, fallbacks: int = 0) -> RouteInfo:
        return cls(candidate.model_id, candidate.provider, candidate.upstream, attempts, fallbacks)

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
