"""The response cache's read-through over its tiers: L1 (memory), L2 (shared), L3 (SQL).

``TieredCache.get`` asks each tier in order and back-fills the tiers above the one that hit;
``set`` writes every tier. A tier that fails (Redis or the database gone) is skipped with a
warning and counted in ``errors``: the cache degrades, requests never fail because of it.
``single_flight`` makes concurrent identical misses share one upstream call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, cast

from noa.cache_store import TtlLru

T = TypeVar("T")
logger = logging.getLogger("noa.cache")


class Tier(Protocol):
    """One cache tier: bytes by key, with a TTL per entry."""

    name: str  # "l1", "l2" or "l3": what ``x-noa-cache: hit-<name>`` says

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...


class MemoryTier:
    """L1: this process's bounded LRU with TTL."""

    def __init__(self, store: TtlLru, ttl_s: float, name: str = "l1") -> None:
        self.name = name
        self._store = store
        self.ttl_s = ttl_s

    async def get(self, key: str) -> bytes | None:
        value = self._store.get(key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._store.set(key, value, ttl_s)


@dataclass
class TierStats:
    hits: int = 0
    misses: int = 0
    errors: int = 0


@dataclass(frozen=True, slots=True)
class Hit:
    value: bytes
    tier: str


@dataclass
class TieredCache:
    """Read-through over ``tiers`` (fastest first), each with its own TTL."""

    tiers: Sequence[Tier]
    ttls: Sequence[float]
    stats: dict[str, TierStats] = field(default_factory=dict)
    _flights: dict[str, asyncio.Future[object]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.tiers) != len(self.ttls):
            raise ValueError("one TTL per tier")
        for tier in self.tiers:
            self.stats.setdefault(tier.name, TierStats())

    async def get(self, key: str) -> Hit | None:
        for index, tier in enumerate(self.tiers):
            stats = self.stats[tier.name]
            try:
                value = await tier.get(key)
            except Exception as e:
                stats.errors += 1
                logger.warning("cache tier %s failed on get, skipping it: %s", tier.name, e)
                continue
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
        try:
            await tier.set(key, value, self.ttls[index])
        except Exception as e:
            self.stats[tier.name].errors += 1
            logger.warning("cache tier %s failed on set, skipping it: %s", tier.name, e)

    async def set(self, key: str, value: bytes) -> None:
        for index in range(len(self.tiers)):
            await self._set_one(index, key, value)

    async def single_flight(self, key: str, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """``work()`` once for concurrent callers of the same key: (result, shared?).

        The first caller runs it; the others wait for its result (or its error)."""
        flight = self._flights.get(key)
        if flight is not None:
            result = await asyncio.shield(flight)
            return cast(T, result), True
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        try:
            value = await work()
        except BaseException as e:
            if not future.done():
                future.set_exception(e if isinstance(e, Exception) else RuntimeError(repr(e)))
                future.exception()  # the waiters read it; nobody may be waiting at all
            raise
        else:
            future.set_result(value)
            return value, False
        finally:
            del self._flights[key]
