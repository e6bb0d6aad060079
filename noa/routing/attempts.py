"""One try of one candidate, and what the chain says when every try failed.

``Hold`` is a call the router admitted to a candidate: its provider-quota slot, its in-flight
count and its timing; closing it reports the outcome to the candidate's breaker and stats (a
stream closes it when it ends). ``Skip`` is a candidate passed over without a call. The
functions below word the errors a chain ends with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from noa.errors import NoaError, ServiceUnavailableError, UpstreamError, UpstreamTimeoutError
from noa.providers.base import Body
from noa.routing.breakers.board import Breakers
from noa.routing.plan import Candidate, Target
from noa.routing.quota import QuotaSlot, used_tokens
from noa.routing.selection import CandidateStats


@dataclass(slots=True)
class Hold:
    """One admitted call to a candidate."""

    candidate: Candidate
    breakers: Breakers
    stats: CandidateStats
    slot: QuotaSlot | None
    clock: Callable[[], float]
    streamed: bool
    started: float = 0.0
    open: bool = field(default=True)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def first_token(self) -> None:
        self.stats.observe(self.clock() - self.started, streamed=True)
        self.breakers.record(self.candidate.key, True)

    def close(self, *, ok: bool | None, body: Body | None = None) -> None:
        """``ok`` None: the call never got an answer either way (cancelled)."""
        if not self.open:
            return
        self.open = False
        self.stats.in_flight -= 1
        if self.slot is not None:
            self.slot.finish(used_tokens(body) if body is not None else None)
        if ok is None:
            self.breakers.release(self.candidate.key)
            return
        if ok:
            self.stats.successes += 1
            if not self.streamed:
                self.stats.observe(self.clock() - self.started, streamed=False)
                self.breakers.record(self.candidate.key, True)
        else:
            self.stats.failures += 1
            self.breakers.record(self.candidate.key, False)


class Skip(Exception):
    """A candidate passed over without a call: circuit open or provider at its limits."""

    def __init__(self, reason: str, retry_after: float, kind: str) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.kind = kind


def deadline_error(
    deadline_s: float, reasons: Sequence[str], attempts: int
) -> UpstreamTimeoutError:
    return UpstreamTimeoutError(
        f"No answer within the request deadline of {deadline_s:g} s after"
        f" {attempts} attempt(s): {'; '.join(reasons) or 'none'}",
        code="deadline_exceeded",
    )


def exhausted_error(
    target: Target,
    reasons: Sequence[str],
    errors: Sequence[NoaError],
    skips: Sequence[Skip],
    attempts: int,
) -> NoaError:
    """What a chain that found no answer reports: 503 when nothing could even be tried, the one
    error when there was one, else every reason."""
    if attempts == 0 and skips:
        wait = max(1.0, min(s.retry_after for s in skips))
        kinds = {s.kind for s in skips}
        what = "circuits are open" if kinds == {"circuit_open"} else "are unavailable"
        return ServiceUnavailableError(
            f"Every provider of `{target.name}` {what}: {'; '.join(reasons)}",
            code=kinds.pop() if len(kinds) == 1 else "providers_unavailable",
            retry_after=wait,
        )
    if len(errors) == 1 and len(reasons) == 1:
        return errors[0]
    message = f"All providers of `{target.name}` failed ({attempts} attempts): " + "; ".join(
        reasons
    )
    if errors and all(isinstance(e, UpstreamTimeoutError) for e in errors):
        return UpstreamTimeoutError(message, code="all_providers_timed_out")
    return UpstreamError(message, code="all_providers_failed")
