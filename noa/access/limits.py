"""Rate limits and budgets as one atomic decision: the state every limiter backend holds.

A request asks to take from several token buckets at once (requests and tokens per minute, per
key, team and model) and to reserve an amount against budgets. ``LimitState.admit`` grants all
of it or none of it, so two scopes can never disagree, and it refuses a revoked key. After the
answer, ``adjust`` reconciles: tokens and dollars actually used minus what was reserved (a
refund when negative). The backends hold this one state: in this process (one Gateway replica),
in a shared Ray actor (several), or in Redis through an equivalent Lua script; each is exact
because each decision happens in one place.

A bucket of ``limit`` per minute holds at most ``limit`` and refills ``limit / 60`` per second.
A budget counts USD spent in its period (the key names the period, so a new period starts
from zero); its first use may seed it with what the database says was spent before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Take:
    """Take ``cost`` from the bucket ``key`` that holds ``limit`` per minute."""

    key: str  # e.g. "rpm:key:key_abc", "tpm:team:research", "rpm:model:gpt"
    limit: float
    cost: float


@dataclass(frozen=True, slots=True)
class Reserve:
    """Reserve ``amount`` USD against the budget ``key`` (limit ``limit`` for its period)."""

    key: str  # e.g. "budget:key:key_abc:month:2026-11"
    limit: float
    amount: float
    expires_in_s: float  # until the period ends (a backend may forget the counter then)
    seed: float = 0.0  # spent before this counter existed (from the usage records)


@dataclass(frozen=True, slots=True)
class BucketLevel:
    limit: float
    remaining: float
    reset_s: float  # until the bucket is full again


@dataclass(slots=True)
class Decision:
    allowed: bool
    reason: str | None = None  # "revoked" | "rpm" | "tpm" | "budget" (None when allowed)
    scope: str | None = None  # the key of the check that refused
    retry_after_s: float = 0.0
    levels: dict[str, BucketLevel] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=dict)  # budgets after this decision

    def to_wire(self) -> dict[str, Any]:
        """A plain dict (crosses Ray handles and comes out of the Lua script the same)."""
        return {
            "allowed": self.allowed,
            "reason": self.reason,
            "scope": self.scope,
            "retry_after_s": self.retry_after_s,
            "levels": {k: [v.limit, v.remaining, v.reset_s] for k, v in self.levels.items()},
            "spent": self.spent,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Decision:
        return cls(
            allowed=bool(data["allowed"]),
            reason=data.get("reason"),
            scope=data.get("scope"),
            retry_after_s=float(data.get("retry_after_s") or 0.0),
            levels={k: BucketLevel(*map(float, v)) for k, v in (data.get("levels") or {}).items()},
            spent={k: float(v) for k, v in (data.get("spent") or {}).items()},
        )


def _kind(key: str) -> str:
    return key.split(":", 1)[0]


class LimitState:
    """Buckets, budgets and revoked keys; every method is one atomic step (no awaits)."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (level, at)
        self._budgets: dict[str, tuple[float, float]] = {}  # key -> (spent, expires_at)
        self._revoked: set[str] = set()

    def _level(self, take: Take, now: float) -> float:
        level, at = self._buckets.get(take.key, (take.limit, now))
        rate = take.limit / WINDOW_S
        return min(take.limit, level + max(0.0, now - at) * rate)

    def _spent(self, reserve: Reserve, now: float) -> float:
        found = self._budgets.get(reserve.key)
        if found is None or found[1] <= now:
            return reserve.seed
        return found[0]

    def admit(
        self,
        takes: list[Take],
        reserves: list[Reserve],
        now: float,
        principal: str | None = None,
    ) -> Decision:
        if principal is not None and principal in self._revoked:
            return Decision(False, "revoked", principal)
        levels = {t.key: self._level(t, now) for t in takes}
        for take in takes:
            level = levels[take.key]
            if take.cost > level:
                rate = take.limit / WINDOW_S
                wait = WINDOW_S if take.cost > take.limit else (take.cost - level) / rate
                return Decision(
                    False,
                    _kind(take.key),
                    take.key,
                    wait,
                    self._report(takes, levels),
                )
        spent = {r.key: self._spent(r, now) for r in reserves}
        for reserve in reserves:
            if spent[reserve.key] + reserve.amount > reserve.limit:
                return Decision(
                    False,
                    "budget",
                    reserve.key,
                    reserve.expires_in_s,
                    self._report(takes, levels),
                    spent,
                )
        for take in takes:
            levels[take.key] -= take.cost
            self._buckets[take.key] = (levels[take.key], now)
        for reserve in reserves:
            spent[reserve.key] += reserve.amount
            self._budgets[reserve.key] = (spent[reserve.key], now + reserve.expires_in_s)
        return Decision(True, levels=self._report(takes, levels), spent=spent)

    @staticmethod
    def _report(takes: list[Take], levels: dict[str, float]) -> dict[str, BucketLevel]:
        report = {}
        for take in takes:
            level = levels[take.key]
            rate = take.limit / WINDOW_S
            reset = max(0.0, (take.limit - level) / rate) if rate > 0 else math.inf
            report[take.key] = BucketLevel(take.limit, max(0.0, math.floor(level)), reset)
        return report

    def adjust(
        self, tokens: dict[str, tuple[float, float]], dollars: dict[str, float], now: float
    ) -> None:
        """Reconcile: ``tokens`` maps a bucket to (its limit, tokens used beyond the reservation:
        negative refunds); ``dollars`` maps a budget to USD beyond it. A bucket may go below
        zero (a debt the refill pays back); a budget may pass its limit by what was used."""
        for key, (limit, extra) in tokens.items():
            level = self._level(Take(key, limit, 0), now)
            self._buckets[key] = (min(limit, level - extra), now)
        for key, extra in dollars.items():
            found = self._budgets.get(key)
            if found is not None and found[1] > now:
                self._budgets[key] = (max(0.0, found[0] + extra), found[1])

    def revoke(self, principal: str) -> None:
        self._revoked.add(principal)

    def prune(self, now: float) -> int:
        """Forget full buckets and ended budgets (they equal fresh ones); how many went."""
        full = [
            k
            for k, (level, at) in self._buckets.items()
            if level >= 0 and now - at >= WINDOW_S  # refilled completely by now
        ]
        ended = [k for k, (_, expires) in self._budgets.items() if expires <= now]
        for k in full:
            del self._buckets[k]
        for k in ended:
            del self._budgets[k]
        return len(full) + len(ended)
