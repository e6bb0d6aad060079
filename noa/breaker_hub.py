"""Breaker state shared by every replica: the hub (in the HealthActor) and each replica's link.

A replica's ``BreakerBoard`` hands each transition to its ``BreakerLink``, which forwards it to
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
from dataclasses import dataclass
from typing import Any

from noa.breaker import BreakerBoard, Change, State

Clock = Callable[[], float]
logger = logging.getLogger("noa.breakers")


@dataclass(slots=True)
class _Shared:
    state: State
    open_until: float = 0.0
    probe_until: float = 0.0  # a claimed probe is outstanding until then


class BreakerHub:
    """The shared view: the latest transition of every breaker, and who probes next."""

    def __init__(self, clock: Clock = time.monotonic, probe_timeout_s: float = 60.0) -> None:
        self._clock = clock
        self._probe_timeout = probe_timeout_s
        self._states: dict[str, _Shared] = {}
        self.down: frozenset[str] = frozenset()  # providers the active checks report down
        self.traffic: dict[str, dict[str, Any]] = {}  # replica -> its routers' stats
        self.version = 0
        self._changed = asyncio.Event()
        self.on_report: Callable[[str, str, float], None] | None = None  # e.g. a Redis relay

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
        if share and self.on_report is not None:
            self.on_report(key, State(state).value, remaining_s)
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
                for field in ("successes", "failures", "in_flight"):
                    t[field] += s.get(field) or 0
                for field in ("latency_ms", "ttft_ms"):
                    if s.get(field) is not None:
                        t.setdefault(field, []).append(s[field])
        for t in totals.values():  # the replicas' EWMAs, averaged
            for field in ("latency_ms", "ttft_ms"):
                if field in t:
                    t[field] = round(sum(t[field]) / len(t[field]), 3)
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


class BreakerLink:
    """One replica's connection to the hub: publishes local transitions, applies the others'.

    ``publish`` and ``watch`` are the hub's methods, in-process or across a handle.
    """

    def __init__(
        self,
        board: BreakerBoard,
        publish: Publish,
        watch: Watch,
        *,
        on_down: Callable[[frozenset[str]], None] | None = None,
        traffic: tuple[Callable[[], dict[str, Any]], Traffic] | None = None,
        traffic_every_s: float = 5.0,
        retry_s: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.board = board
        self._publish = publish
        self._watch = watch
        self._on_down = on_down
        self._traffic = traffic
        self._traffic_every = traffic_every_s
        self._retry_s = retry_s
        self._sleep = sleep
        self._outbox: asyncio.Queue[Change] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._version = -1
        self._unshared: dict[str, int] = {}  # keys whose local change the hub has not got yet
        board.on_change = self._queue

    def _queue(self, change: Change) -> None:
        self._unshared[change.key] = self._unshared.get(change.key, 0) + 1
        self._outbox.put_nowait(change)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._send()), loop.create_task(self._receive())]
        if self._traffic is not None:
            self._tasks.append(loop.create_task(self._report_traffic()))

    async def _report_traffic(self) -> None:
        assert self._traffic is not None
        collect, send = self._traffic
        while True:
            await self._sleep(self._traffic_every)
            try:
                await send(collect())
            except Exception as e:
                logger.debug("could not report traffic: %s", e)

    async def _send(self) -> None:
        while True:
            change = await self._outbox.get()
            try:
                await self._publish(change)
            except Exception as e:  # the hub restarts with the app: local state still holds
                logger.warning("could not share breaker change %s: %s", change, e)
            finally:
                left = self._unshared.pop(change.key, 1) - 1
                if left:
                    self._unshared[change.key] = left

    async def _receive(self) -> None:
        while True:
            try:
                snapshot = await self._watch(self._version)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                logger.warning("breaker hub unreachable: %s", e)
                await self._sleep(self._retry_s)
                continue
            self.apply(snapshot)

    def apply(self, snapshot: dict[str, Any]) -> None:
        if snapshot["version"] == self._version:
            return
        self._version = snapshot["version"]
        if self._on_down is not None:
            self._on_down(frozenset(snapshot.get("down", ())))
        for key, shared in snapshot["breakers"].items():
            if key in self._unshared:
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


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel background loops and wait until each has ended."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
