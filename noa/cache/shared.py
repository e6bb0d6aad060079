"""The shared tier when no Redis is configured: the CacheActor's core (``SharedMemory``), one
per app, and each Gateway replica's L2 over its handle (``RemoteTier``)."""

from __future__ import annotations

from typing import Any

from noa.cache.flight import MemoryFlights, State
from noa.cache.memory import TtlLru


class SharedMemory:
    """Entries and single-flight leases every Gateway replica of the app shares."""

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self._store = TtlLru(max_entries, ttl_s)
        self._flights = MemoryFlights(self._store)

    def get(self, key: str) -> Any | None:
        return self._store.get(key)

    def set(self, key: str, value: Any, ttl_s: float | None = None) -> None:
        self._store.set(key, value, ttl_s)

    def delete(self, key: str) -> bool:
        return self._store.delete(key)

    def flight(self, key: str, owner: str, lease_s: float) -> tuple[bytes | None, State]:
        return self._flights.flight(key, owner, lease_s)

    def flight_done(self, key: str, owner: str, linger_s: float) -> None:
        self._flights.flight_done(key, owner, linger_s)

    def stats(self) -> dict[str, int]:
        return self._store.stats() | {"leases": len(self._flights.leases)}


class RemoteTier:
    """The response cache's L2 (and its ``FlightStore``) over a handle to the CacheActor."""

    name = "l2"

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    async def get(self, key: str) -> bytes | None:
        value = await self._handle.get.remote(key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._handle.set.remote(key, value, ttl_s)

    async def flight(self, key: str, owner: str, lease_s: float) -> tuple[bytes | None, State]:
        entry, state = await self._handle.flight.remote(key, owner, lease_s)
        return entry, state

    async def flight_done(self, key: str, owner: str, linger_s: float) -> None:
        await self._handle.flight_done.remote(key, owner, linger_s)
