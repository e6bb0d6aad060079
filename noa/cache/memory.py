"""A bounded in-memory store with per-entry TTL and LRU eviction (clock injected), and the L1
tier over it. The CacheActor's shared tier (``shared.py``) holds one too, when no Redis is
configured."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

Clock = Callable[[], float]


class TtlLru:
    """``get``/``set``/``delete`` with at most ``max_entries`` live entries."""

    def __init__(self, max_entries: int, default_ttl_s: float, clock: Clock = time.monotonic):
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self._max = max_entries
        self._ttl = default_ttl_s
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: str) -> Any | None:
        item = self._data.get(key)
        if item is None:
            self.misses += 1
            return None
        expires, value = item
        if expires <= self._clock():
            del self._data[key]
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def set(self, key: str, value: Any, ttl_s: float | None = None) -> None:
        ttl = self._ttl if ttl_s is None else ttl_s
        if ttl <= 0:
            self._data.pop(key, None)
            return
        self._data[key] = (self._clock() + ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)
            self.evictions += 1

    def delete(self, key: str) -> bool:
        return self._data.pop(key, None) is not None

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> dict[str, int]:
        return {
            "entries": len(self._data),
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
        }


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
