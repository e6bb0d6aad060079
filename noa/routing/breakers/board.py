"""Circuit breakers, one per (provider, upstream model), with an injected clock.

CLOSED -> OPEN after ``failure_threshold`` consecutive failures, or when failures reach
``error_rate`` of at least ``min_requests`` calls in the last ``window_s``. OPEN -> HALF_OPEN once
``cooldown_s`` has passed: one probe request goes through (claimed from the shared hub when there
is one, so one replica probes for all); success closes the breaker, failure opens it again.

Every local transition is handed to ``on_change`` (the replica's link to the shared hub), and
``apply`` takes transitions other replicas made, so one replica's discovery protects them all.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from noa.config import BreakerConfig

Clock = Callable[[], float]


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Change:
    """A breaker's new state; ``remaining_s`` of cooldown when OPEN (a duration, not a time,
    so clocks of different processes never need to agree)."""

    key: str
    state: State
    remaining_s: float = 0.0


class _Window:
    """Calls and failures over the last ``span`` seconds, in ten buckets, with running totals."""

    __slots__ = ("_buckets", "_width", "calls", "failures")

    def __init__(self, span: float) -> None:
        self._width = span / 10
        self._buckets: list[list[float]] = []  # [bucket start, calls, failures]
        self.calls = 0
        self.failures = 0

    def add(self, now: float, failed: bool) -> tuple[int, int]:
        start = now - now % self._width
        buckets = self._buckets
        if not buckets or buckets[-1][0] != start:
            oldest = now - self._width * 10
            while buckets and buckets[0][0] + self._width <= oldest:
                _, calls, failures = buckets.pop(0)
                self.calls -= int(calls)
                self.failures -= int(failures)
            buckets.append([start, 0, 0])
        bucket = buckets[-1]
        bucket[1] += 1
        self.calls += 1
        if failed:
            bucket[2] += 1
            self.failures += 1
        return self.calls, self.failures

    def clear(self) -> None:
        self._buckets.clear()
        self.calls = self.failures = 0


class Breaker:
    """One circuit. ``allow`` says whether a call may go now; ``record`` reports its outcome."""

    def __init__(self, key: str, config: BreakerConfig, clock: Clock) -> None:
        self.key = key
        self._config = config
        self._clock = clock
        self.state = State.CLOSED
        self.consecutive = 0
        self._open_until = 0.0
        self._probing = False
        self._window = _Window(config.window_s)

    def remaining(self) -> float:
        return max(0.0, self._open_until - self._clock())

    def available(self) -> bool:
        """Could a call go now (CLOSED, or a probe is due and none is out)?"""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            return self.remaining() <= 0
        return not self._probing

    def begin_probe(self) -> bool:
        """Take the one probe of a due breaker; False when another call already has it."""
        if self.state is State.OPEN and self.remaining() <= 0:
            self.state = State.HALF_OPEN
        if self.state is not State.HALF_OPEN or self._probing:
            return False
        self._probing = True
        return True

    def end_probe(self) -> None:
        """A probe that never reached the upstream (deadline, cancellation): let another go."""
        self._probing = False

    def record(self, ok: bool) -> Change | None:
        """The outcome of a call that went through; the transition it caused, if any."""
        if self.state is State.HALF_OPEN:
            self._probing = False
            return self._close() if ok else self._open()
        if self.state is State.OPEN:
            return None  # a call that started before another replica opened it
        calls, failures = self._window.add(self._clock(), not ok)
        if ok:
            self.consecutive = 0
            return None
        self.consecutive += 1
        c = self._config
        if self.consecutive >= c.failure_threshold or (
            calls >= c.min_requests and failures >= c.error_rate * calls
        ):
            return self._open()
        return None

    def _open(self, remaining: float | None = None) -> Change:
        cooldown = self._config.cooldown_s if remaining is None else remaining
        self.state = State.OPEN
        self._open_until = self._clock() + cooldown
        self._probing = False
        return Change(self.key, State.OPEN, cooldown)

    def _close(self) -> Change:
        self.state = State.CLOSED
        self.consecutive = 0
        self._probing = False
        self._window.clear()
        return Change(self.key, State.CLOSED)

    def apply(self, change: Change) -> None:
        """Another replica's transition."""
        if change.state is State.OPEN:
            self._open(change.remaining_s)
        elif change.state is State.CLOSED and self.state is not State.CLOSED:
            self._close()

    def snapshot(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "consecutive_failures": self.consecutive,
            "retry_in_s": round(self.remaining(), 3) if self.state is not State.CLOSED else 0.0,
        }


ProbeClaim = Callable[[str], Awaitable[bool]]


class Breakers:
    """Every breaker of one router, created on first use; transitions go to ``on_change``, and
    due probes are claimed through ``claim_probe`` (the shared hub) when given. ``down`` holds
    the providers the shared active checks report down (the router tries them last)."""

    def __init__(
        self,
        config: BreakerConfig,
        *,
        clock: Clock = time.monotonic,
        on_change: Callable[[Change], None] | None = None,
        claim_probe: ProbeClaim | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._breakers: dict[str, Breaker] = {}
        self._on_change = on_change
        self._claim_probe = claim_probe
        self.down: frozenset[str] = frozenset()

    def get(self, key: str) -> Breaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = Breaker(key, self.config, self._clock)
        return breaker

    async def admit(self, key: str) -> bool:
        """May a call to ``key`` go now? A due probe is claimed (from the hub, when shared)."""
        breaker = self.get(key)
        if breaker.state is State.CLOSED:
            return True
        if not breaker.begin_probe():
            return False
        if self._claim_probe is not None:
            try:
                claimed = await self._claim_probe(key)
            except Exception:
                claimed = True  # the hub is unreachable: probe locally rather than never
            if not claimed:
                breaker.end_probe()
                return False
        return True

    def record(self, key: str, ok: bool) -> None:
        change = self.get(key).record(ok)
        if change is not None and self._on_change is not None:
            self._on_change(change)

    def release(self, key: str) -> None:
        """An admitted call that never reached the upstream."""
        self.get(key).end_probe()

    def apply(self, change: Change) -> None:
        self.get(change.key).apply(change)

    def mark_down(self, providers: frozenset[str]) -> None:
        """The providers the active checks report down now (from the shared hub)."""
        self.down = providers

    def retry_after(self, keys: list[str]) -> float:
        """Seconds until the first of ``keys`` may be probed."""
        return min((self.get(k).remaining() for k in keys), default=0.0)

    def reset(self) -> None:
        """Forget every breaker (all CLOSED, no failures counted)."""
        self._breakers.clear()

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {key: b.snapshot() for key, b in self._breakers.items()}
