"""Provider account quotas: requests/min, tokens/min and concurrency, tracked before calling.

NOA routes around a provider that is at its configured limit instead of letting the upstream
answer 429. Tokens are reserved from an estimate before the call and reconciled with the usage
the upstream reports afterwards. Each replica enforces its share (``limit / replicas``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from noa.config import ProviderLimits

Clock = Callable[[], float]


class TokenBucket:
    """``capacity`` units refilled evenly over ``period_s``; may go negative on reconciliation."""

    __slots__ = ("_clock", "_last", "_rate", "capacity", "level")

    def __init__(self, capacity: float, period_s: float, clock: Clock) -> None:
        self.capacity = capacity
        self._rate = capacity / period_s
        self._clock = clock
        self.level = capacity
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._last) * self._rate)
        self._last = now

    def take(self, amount: float) -> bool:
        self._refill()
        if self.level < min(amount, self.capacity):
            return False
        self.level -= amount
        return True

    def adjust(self, amount: float) -> None:
        """Give back (positive) or charge (negative) after the fact."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)

    def wait_for(self, amount: float) -> float:
        self._refill()
        missing = min(amount, self.capacity) - self.level
        return max(0.0, missing / self._rate)


@dataclass(slots=True)
class QuotaSlot:
    """One admitted call: give it back with the real token count when it ends."""

    quota: ProviderQuota
    reserved: int
    done: bool = False

    def finish(self, used_tokens: int | None = None) -> None:
        if self.done:
            return
        self.done = True
        self.quota._finish(self, used_tokens)


class ProviderQuota:
    """One provider account's limits, as this replica's share of them."""

    def __init__(
        self, limits: ProviderLimits, *, share: float = 1.0, clock: Clock = time.monotonic
    ) -> None:
        self.limits = limits
        self._rpm = TokenBucket(max(1.0, limits.rpm * share), 60.0, clock) if limits.rpm else None
        self._tpm = TokenBucket(max(1.0, limits.tpm * share), 60.0, clock) if limits.tpm else None
        self._max = max(1, int(limits.max_concurrency * share)) if limits.max_concurrency else None
        self.in_flight = 0

    def try_acquire(self, tokens: int) -> QuotaSlot | None:
        """A slot, or None when the call would exceed a limit (nothing is taken then)."""
        if self._max is not None and self.in_flight >= self._max:
            return None
        if self._tpm is not None and self._tpm.wait_for(tokens) > 0:
            return None
        if self._rpm is not None and not self._rpm.take(1):
            return None
        if self._tpm is not None:
            self._tpm.take(tokens)
        self.in_flight += 1
        return QuotaSlot(self, tokens)

    def retry_after(self, tokens: int) -> float:
        """Seconds until a call of ``tokens`` could be admitted (0 for concurrency: unknown)."""
        waits = [0.0]
        if self._rpm is not None:
            waits.append(self._rpm.wait_for(1))
        if self._tpm is not None:
            waits.append(self._tpm.wait_for(tokens))
        return max(waits)

    def _finish(self, slot: QuotaSlot, used_tokens: int | None) -> None:
        self.in_flight -= 1
        if self._tpm is not None and used_tokens is not None:
            self._tpm.adjust(slot.reserved - used_tokens)


def used_tokens(body: dict[str, object]) -> int | None:
    usage = body.get("usage")
    if isinstance(usage, dict):
        total = usage.get("total_tokens")
        if isinstance(total, int):
            return total
    return None
