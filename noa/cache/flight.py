"""Single flight across replicas: identical cache misses anywhere make one upstream call.

Within a replica, identical misses already share one future (``ResponseCache``). Across
replicas they meet at the shared tier (Redis, or the CacheActor): each replica's first miss
asks the board for the key's *lease*. One call answers with one of three things:

- the entry, when it is already there (stored since this replica's lookup);
- ``lead``: this replica holds the lease and goes upstream;
- ``wait``: another replica holds it; ask again a little later;
- ``done``: the holder ended without storing an entry (its call failed, or the answer was too
  large to store): go upstream without waiting, as local waiters do when their leader fails.

The holder renews its lease while its call runs, so a replica that dies mid-call frees the key
within ``lease_s``; it marks the lease ``done`` once its entry is stored (or will not be). A
board that fails (Redis gone) is left out for a while: misses then go upstream at once, with
single flight per replica only.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Literal, Protocol, runtime_checkable

from noa.cache.memory import TtlLru

State = Literal["lead", "wait", "done"]
Clock = Callable[[], float]
logger = logging.getLogger("noa.cache")


@runtime_checkable
class FlightStore(Protocol):
    """Where replicas meet: the shared tier's entries plus a lease per key."""

    async def flight(self, key: str, owner: str, lease_s: float) -> tuple[bytes | None, State]:
        """The entry if stored; else claim (or renew) the lease for ``owner`` if it is free."""
        ...

    async def flight_done(self, key: str, owner: str, linger_s: float) -> None:
        """``owner``'s call ended: mark the lease done for ``linger_s`` (if still held)."""
        ...


DONE = "\x00done"  # a lease's value once its holder ended


class Leases:
    """The lease table of an in-memory board (the CacheActor's), clock injected."""

    def __init__(self, clock: Clock = time.monotonic, max_leases: int = 100_000) -> None:
        self._clock = clock
        self._max = max_leases
        self._leases: dict[str, tuple[str, float]] = {}

    def _held(self, key: str) -> str | None:
        lease = self._leases.get(key)
        if lease is None:
            return None
        if lease[1] <= self._clock():
            del self._leases[key]
            return None
        return lease[0]

    def claim(self, key: str, owner: str, lease_s: float) -> State:
        holder = self._held(key)
        if holder is None or holder == owner:
            if holder is None and len(self._leases) >= self._max:
                self._prune()
            self._leases[key] = (owner, self._clock() + lease_s)
            return "lead"
        return "done" if holder == DONE else "wait"

    def done(self, key: str, owner: str, linger_s: float) -> None:
        if self._held(key) == owner:
            self._leases[key] = (DONE, self._clock() + linger_s)

    def _prune(self) -> None:
        now = self._clock()
        for key in [k for k, (_, until) in self._leases.items() if until <= now]:
            del self._leases[key]
        while len(self._leases) >= self._max:  # still full: drop the oldest claims
            del self._leases[next(iter(self._leases))]

    def __len__(self) -> int:
        return len(self._leases)


@dataclass
class MemoryFlights:
    """A board over an in-memory store (the CacheActor's entries) and its ``Leases``."""

    store: TtlLru
    leases: Leases = field(default_factory=Leases)

    def flight(self, key: str, owner: str, lease_s: float) -> tuple[bytes | None, State]:
        entry = self.store.get(key)
        if isinstance(entry, bytes):
            return entry, "done"
        return None, self.leases.claim(key, owner, lease_s)

    def flight_done(self, key: str, owner: str, linger_s: float) -> None:
        self.leases.done(key, owner, linger_s)


@dataclass
class Lease:
    """This replica's hold on a key: renewed in the background until ``end``."""

    key: str
    flights: SharedFlights
    renewal: asyncio.Task[None] | None = None

    async def end(self) -> None:
        """The call ended and its entry (if any) is stored: waiters may look now."""
        if self.renewal is not None:
            self.renewal.cancel()
            self.renewal = None
        await self.flights.done(self.key)


@dataclass(eq=False)
class SharedFlights:
    """Joins a replica's first miss of a key to the flight of every other replica."""

    board: FlightStore
    _: KW_ONLY
    lease_s: float = 10.0
    linger_s: float = 5.0
    poll_s: tuple[float, float] = (0.01, 0.1)
    max_wait_s: float = 600.0
    retry_after_s: float = 5.0
    clock: Clock = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    _down_until: float = field(default=0.0, init=False)
    counts: dict[str, int] = field(
        default_factory=lambda: {"led": 0, "joined": 0, "waited_out": 0, "errors": 0},
        init=False,
    )

    def _up(self) -> bool:
        return not self._down_until or self.clock() >= self._down_until

    def _failed(self, action: str, error: Exception) -> None:
        self.counts["errors"] += 1
        if not self._down_until:
            logger.warning(
                "shared single flight failed on %s (%s: %s); misses go upstream at once for %g s",
                action,
                type(error).__name__,
                error,
                self.retry_after_s,
            )
        self._down_until = self.clock() + self.retry_after_s

    def _worked(self) -> None:
        if self._down_until:
            self._down_until = 0.0
            logger.warning("shared single flight is back")

    async def join(self, key: str) -> Lease | bytes | None:
        """A ``Lease`` (go upstream, then ``end`` it), another replica's entry, or None (go
        upstream without a lease: the holder failed, the board is down, or the wait ran out)."""
        if not self._up():
            return None
        end = self.clock() + self.max_wait_s
        delay = self.poll_s[0]
        while True:
            try:
                entry, state = await self.board.flight(key, self.owner, self.lease_s)
            except Exception as e:
                self._failed("claim", e)
                return None
            self._worked()
            if entry is not None:
                self.counts["joined"] += 1
                return entry
            if state == "lead":
                self.counts["led"] += 1
                lease = Lease(key, self)
                lease.renewal = asyncio.get_running_loop().create_task(self._renew(key))
                return lease
            if state == "done":
                return None
            left = end - self.clock()
            if left <= 0:
                self.counts["waited_out"] += 1
                return None
            await self.sleep(min(delay, left))
            delay = min(delay * 2, self.poll_s[1])

    async def _renew(self, key: str) -> None:
        end = self.clock() + self.max_wait_s  # nobody waits longer: a lost call frees the key
        while self.clock() < end:
            await self.sleep(self.lease_s / 3)
            try:
                entry, state = await self.board.flight(key, self.owner, self.lease_s)
            except Exception as e:  # the board is down: waiters stop waiting on their own
                logger.debug("could not renew a flight lease: %s", e)
                continue
            if entry is not None or state != "lead":
                return  # stored, or the lease was lost: nothing left to hold

    async def done(self, key: str) -> None:
        try:
            await self.board.flight_done(key, self.owner, self.linger_s)
        except Exception as e:  # the lease expires on its own
            logger.debug("could not end a flight lease: %s", e)
