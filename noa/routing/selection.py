"""Ordering a plan's candidates: the strategies, and the per-candidate stats they read.

priority: the configured order. least-latency: lowest EWMA of recent latency (non-streamed) or
time to first token (streamed); candidates never measured go first, so each gets measured.
least-cost: lowest estimated price of this request. least-busy: fewest requests in flight from
this replica. Ties keep the configured order. Candidates whose provider the active health checks
report down go last: still tried, never first.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from noa.config import Strategy
from noa.routing.registry import Candidate

EWMA_ALPHA = 0.3


@dataclass(slots=True)
class CandidateStats:
    latency_s: float | None = None
    ttft_s: float | None = None
    in_flight: int = 0
    successes: int = 0
    failures: int = 0

    def observe(self, seconds: float, *, streamed: bool) -> None:
        if streamed:
            self.ttft_s = _ewma(self.ttft_s, seconds)
        else:
            self.latency_s = _ewma(self.latency_s, seconds)


def _ewma(previous: float | None, sample: float) -> float:
    return sample if previous is None else previous + EWMA_ALPHA * (sample - previous)


@dataclass
class TrafficStats:
    """Per-candidate stats of one replica (keyed by ``Candidate.key``)."""

    stats: dict[str, CandidateStats] = field(default_factory=dict)

    def get(self, key: str) -> CandidateStats:
        s = self.stats.get(key)
        if s is None:
            s = self.stats[key] = CandidateStats()
        return s

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {
            key: {
                "latency_ms": None if s.latency_s is None else round(s.latency_s * 1000, 3),
                "ttft_ms": None if s.ttft_s is None else round(s.ttft_s * 1000, 3),
                "in_flight": s.in_flight,
                "successes": s.successes,
                "failures": s.failures,
            }
            for key, s in self.stats.items()
        }


def estimated_cost(candidate: Candidate, prompt_tokens: int, completion_tokens: int) -> float:
    price = candidate.price
    if price is None:
        return math.inf  # unknown price: after every priced candidate
    return (price.input * prompt_tokens + price.output * completion_tokens) / 1e6


def order(
    candidates: Sequence[Candidate],
    strategy: Strategy,
    board: TrafficStats,
    *,
    streamed: bool,
    tokens: tuple[int, int] = (0, 0),
    down: Collection[str] = (),
) -> list[Candidate]:
    """The candidates in the order they should be tried."""
    indexed = list(enumerate(candidates))
    if strategy == "least-latency":

        def score(c: Candidate) -> float:
            s = board.stats.get(c.key)
            value = None if s is None else (s.ttft_s if streamed else s.latency_s)
            if value is None and s is not None:
                value = s.latency_s if streamed else s.ttft_s
            return -1.0 if value is None else value

        indexed.sort(key=lambda ic: (score(ic[1]), ic[0]))
    elif strategy == "least-cost":
        indexed.sort(key=lambda ic: (estimated_cost(ic[1], *tokens), ic[0]))
    elif strategy == "least-busy":
        indexed.sort(key=lambda ic: (board.get(ic[1].key).in_flight, ic[0]))
    ranked = [c for _, c in indexed]
    if down:
        ranked = [c for c in ranked if c.provider not in down] + [
            c for c in ranked if c.provider in down
        ]
    return ranked
