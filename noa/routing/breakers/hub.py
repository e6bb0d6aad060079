"""Breaker state shared by every replica: the hub (in the HealthActor) and each replica's link.

A replica's ``Breakers`` hands each transition to its ``BreakerLink``, which forwards it to
the ``BreakerHub`` off the request path. Each link long-polls the hub (``watch``), so a
transition reaches every other replica as soon as the hub has it, in milliseconds, with no
polling cost while nothing changes. A due probe is claimed from the hub, so one replica probes
for all of them. Durations, not timestamps, cross processes: no two clocks need to agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from noa.routing.breakers.board import Breakers, Change, State

Clock = Callable[[], float]
logger = logging.getLogger("noa.breakers")


@dataclass(slots=True)
class _Shared:
    state: State
    open_until: float = 0.0
    probe_until: float = 0.0  # a claimed probe is outstanding until then


class BreakerHub:
    """The shared view: the latest transition of every breaker, and who probes next."""

    def __init__(
        self,
        clock: Clock = time.monotonic,
        probe_timeout_s: float = 60.0,
        on_report: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self._clock = clock
        self._probe_timeout = probe_timeout_s
        self._states: dict[str, _Shared] = {}
        self.down: frozenset[str] = frozenset()  # providers the active checks report down
        self.traffic: dict[str, dict[str, Any]] = {}  # replica -> its routers' stats
        self.version = 0
        self._changed = asyncio.Event()
        self._on_report = on_report  # e.g. the Redis relay's outbox: other apps hear of it

    def _bump(self) -> int:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()
        return self.version

    def report(self, key: str, state: str, remaining_s: float = 0.0, *, share: bool = True) -> int:
        """A transition; ``on_report`` passes it on (to other apps) unless ``share`` is off."""
        now = self._clock()
        if State(state) is State.OPEN:
            self._states[key] = _Shared(State.OPEN, now + remaining_s)
        else:
            self._states[key] = _Shared(State.CLOSED)
        if share and self._on_report is not None:
            self._on_report(key, State(state).value, remaining_s)
        return self._bump()

    def set_down(self, providers: frozenset[str]) -> None:
        if providers != self.down:
            self.down = providers
            self._bump()

    def report_traffic(self, replica: str, stats: dict[str, Any]) -> None:
        """A replica's passive signals (per ``provider/upstream``: calls, failures, EWMAs)."""
        self.traffic[replica] = stats

    def traffic_totals(self) -> dict[str, dict[str, Any]]:
        totals: dict[str, dict[str, Any]] = {}
        for stats in self.traffic.values():
            for key, s in stats.items():
                t = totals.setdefault(key, {"successes": 0, "failures": 0, "in_flight": 0})
                for name in ("successes", "failures", "in_flight"):
                    t[name] += s.get(name) or 0
                for name in ("latency_ms", "ttft_ms"):
                    if s.get(name) is not None:
                        t.setdefault(name, []).append(s[name])
        for t in totals.values():  # the replicas' EWMAs, averaged
            for name in ("latency_ms", "ttft_ms"):
                if name in t:
                    t[name] = round(sum(t[name]) / len(t[name]), 3)
        return totals

    def claim_probe(self, key: str) -> bool:
        """True for exactly one caller per due breaker (until its probe reports or times out)."""
        now = self._clock()
        shared = self._states.get(key)
        if shared is None or shared.state is State.CLOSED:
            return True  # the hub knows of no open breaker: nothing to coordinate
        if shared.open_until > now or shared.probe_until > now:
            return False
        shared.probe_until = now + self._probe_timeout
        return True

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "version": self.version,
            "down": sorted(self.down),
            "breakers": {
                key: {"state": s.state.value, "remaining_s": max(0.0, s.open_until - now)}
                for key, s in self._states.items()
            },
        }

    async def watch(self, version: int, timeout_s: float = 10.0) -> dict[str, Any]:
        """The snapshot, once it is newer than ``version`` (or after ``timeout_s``)."""
        if version == self.version:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout_s)
        return self.snapshot()


Publish = Callable[[Change], Awaitable[Any]]
Watch = Callable[[int], Awaitable[dict[str, Any]]]
Traffic = Callable[[dict[str, Any]], Awaitable[Any]]


class ChangeOutbox:
    """A replica's breaker transitions on their way to the hub (``Breakers(on_change=
    outbox.put)``); until one is sent, the hub's older view of its key is not applied."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Change] = asyncio.Queue()
        self.unshared: dict[str, int] = {}  # keys whose local change the hub has not got yet

    def put(self, change: Change) -> None:
        self.unshared[change.key] = self.unshared.get(change.key, 0) + 1
        self.queue.put_nowait(change)

    def sent(self, change: Change) -> None:
        left = self.unshared.pop(change.key, 1) - 1
        if left:
            self.unshared[change.key] = left


@dataclass(eq=False)
class BreakerLink:
    """One replica's connection to the hub: publishes local transitions (from ``outbox``),
    applies the others', and marks down the providers the hub's active checks found down.

    ``publish`` and ``watch`` are the hub's methods, in-process or across a handle.
    """

    board: Breakers
    outbox: ChangeOutbox
    publish: Publish
    watch: Watch
    _: KW_ONLY
    traffic: tuple[Callable[[], dict[str, Any]], Traffic] | None = None
    traffic_every_s: float = 5.0
    retry_s: float = 1.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    _version: int = field(default=-1, init=False)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._send()), loop.create_task(self._receive())]
        if self.traffic is not None:
            self._tasks.append(loop.create_task(self._report_traffic()))

    async def _report_traffic(self) -> None:
        assert self.traffic is not None
        collect, send = self.traffic
        while True:
            await self.sleep(self.traffic_every_s)
            try:
                await send(collect())
            except Exception as e:
                logger.debug("could not report traffic: %s", e)

    async def _send(self) -> None:
        while True:
            change = await self.outbox.queue.get()
            try:
                await self.publish(change)
            except Exception as e:  # the hub restarts with the app: local state still holds
                logger.warning("could not share breaker change %s: %s", change, e)
            finally:
                self.outbox.sent(change)

    async def _receive(self) -> None:
        while True:
            try:
                snapshot = await self.watch(self._version)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                logger.warning("breaker hub unreachable: %s", e)
                await self.sleep(self.retry_s)
                continue
            self.apply(snapshot)

    def apply(self, snapshot: dict[str, Any]) -> None:
        if snapshot["version"] == self._version:
            return
        self._version = snapshot["version"]
        self.board.mark_down(frozenset(snapshot.get("down", ())))
        for key, shared in snapshot["breakers"].items():
            if key in self.outbox.unshared:
                continue  # our own newer change is on its way to the hub
            state = State(shared["state"])
            breaker = self.board.get(key)
            remaining = shared["remaining_s"]
            if state is State.OPEN:
                if breaker.state is State.CLOSED or (
                    breaker.state is State.OPEN and breaker.remaining() < remaining
                ):
                    breaker.apply(Change(key, state, remaining))
            elif breaker.state is not State.CLOSED:
                breaker.apply(Change(key, state))

    async def aclose(self) -> None:
        await stop_tasks(self._tasks)


async def stop_tasks(tasks: list[asyncio.Task[None]], again_s: float = 1.0) -> None:
    """Cancel background loops and wait until each has ended, cancelling again every
    ``again_s`` a loop that is still running: a library that swallows a cancellation (redis-py's
    ``PubSub.get_message`` does when it meets its own timeout) would otherwise keep the loop,
    and whoever waits for it, going forever."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        while not task.done():
            await asyncio.wait({task}, timeout=again_s)
            if not task.done():
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
