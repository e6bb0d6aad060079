"""The response cache's read-through over its tiers: L1 (memory), L2 (shared), L3 (SQL).

``TieredCache.get`` asks each tier in order and back-fills the tiers above the one that hit;
``set`` writes every tier. A tier that fails (Redis or the database gone) is counted in
``errors`` and left out for ``retry_after_s`` (one warning when it goes, one line when it is
back), so a store that hangs costs one timeout per window, not one per request: the cache
degrades, requests never fail because of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

logger = logging.getLogger("noa.cache")


class Tier(Protocol):
    """One cache tier: bytes by key, with a TTL per entry."""

    name: str  # "l1", "l2" or "l3": what ``x-noa-cache: hit-<name>`` says

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...


@dataclass
class TierStats:
    hits: int = 0
    misses: int = 0
    errors: int = 0
    skipped: int = 0  # calls not made while the tier was down
    down_until: float = 0.0


@dataclass(frozen=True, slots=True)
class Hit:
    value: bytes
    tier: str


@dataclass
class TieredCache:
    """Read-through over ``tiers`` (fastest first), each with its own TTL."""

    tiers: Sequence[Tier]
    ttls: Sequence[float]
    retry_after_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    stats: dict[str, TierStats] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.tiers) != len(self.ttls):
            raise ValueError("one TTL per tier")
        for tier in self.tiers:
            self.stats.setdefault(tier.name, TierStats())

    def _up(self, stats: TierStats) -> bool:
        if stats.down_until and self.clock() < stats.down_until:
            stats.skipped += 1
            return False
        return True

    def _failed(self, tier: Tier, stats: TierStats, action: str, error: Exception) -> None:
        stats.errors += 1
        if not stats.down_until:
            logger.warning(
                "cache tier %s failed on %s (%s: %s); left out for %g s",
                tier.name,
                action,
                type(error).__name__,
                error,
                self.retry_after_s,
            )
        stats.down_until = self.clock() + self.retry_after_s

    def _worked(self, tier: Tier, stats: TierStats) -> None:
        if stats.down_until:
            stats.down_until = 0.0
            logger.warning("cache tier %s is back", tier.name)

    async def get(self, key: str) -> Hit | None:
        for index, tier in enumerate(self.tiers):
            stats = self.stats[tier.name]
            if not self._up(stats):
                continue
            try:
                value = await tier.get(key)
            except Exception as e:
                self._failed(tier, stats, "get", e)
                continue
            self._worked(tier, stats)
            if value is None:
                stats.misses += 1
                continue
            stats.hits += 1
            for upper in range(index):  # back-fill the faster tiers
                await self._set_one(upper, key, value)
            return Hit(value, tier.name)
        return None

    async def _set_one(self, index: int, key: str, value: bytes) -> None:
        tier = self.tiers[index]
        stats = self.stats[tier.name]
        if not self._up(stats):
            return
        try:
            await tier.set(key, value, self.ttls[index])
        except Exception as e:
            self._failed(tier, stats, "set", e)
            return
        self._worked(tier, stats)

    async def fill_above(self, key: str, value: bytes, name: str) -> None:
        """Copy an entry found in tier ``name`` (outside ``get``) into the faster tiers."""
        for index, tier in enumerate(self.tiers):
            if tier.name == name:
                return
            await self._set_one(index, key, value)

    async def set(self, key: str, value: bytes) -> None:
        for index in range(len(self.tiers)):
            await self._set_one(index, key, value)
