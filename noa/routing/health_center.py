"""What one app shares among its replicas (the HealthActor's core): the active provider
probes, the breaker hub (and its Redis relay to other apps), and the replicas' metrics.

Every method is a coroutine so the same object serves in-process callers and, behind the
HealthActor, handle callers (``RemoteHealth``) alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from noa.observability.metrics import MetricsBoard, Snapshot, breaker_series
from noa.routing.breakers.hub import BreakerHub, stop_tasks
from noa.routing.breakers.redis import RedisBreakerRelay
from noa.routing.health import HealthMonitor


class HealthView(Protocol):
    """What a Gateway or Router replica asks of its app's health center."""

    async def snapshot(self) -> dict[str, Any]: ...

    async def report(self, key: str, state: str, remaining_s: float) -> int: ...

    async def claim_probe(self, key: str) -> bool: ...

    async def watch(self, version: int) -> dict[str, Any]: ...

    async def report_traffic(self, replica: str, stats: dict[str, Any]) -> None: ...

    async def report_metrics(self, replica: str, snapshot: Snapshot) -> None: ...

    async def metrics(
        self, replica: str | None = None, snapshot: Snapshot | None = None
    ) -> Snapshot: ...


BRIDGE_STALE_S = 30.0  # a bridge replica silent this long is no longer counted


def bridge_states(
    reports: Mapping[tuple[str, str], tuple[float, dict[str, Any]]], now: float
) -> dict[str, dict[str, Any]]:
    """Each queue bridge's state over its replicas' latest reports ((bridge, replica) ->
    (when, the replica's ``BridgeHealth.public()``)): ``up`` when a replica is connected
    (``paused`` when every connected one waits for room), ``down`` when none is, ``stale``
    when none reported lately; the largest lag, the messages held, each replica's state."""
    out: dict[str, dict[str, Any]] = {}
    for (name, replica), (at, status) in sorted(reports.items()):
        entry = out.setdefault(
            name,
            {"status": "stale", "kind": status.get("kind"), "lag": None, "in_flight": 0,
             "replicas": {}},
        )  # fmt: skip
        fresh = now - at <= BRIDGE_STALE_S
        entry["replicas"][replica] = {**status, "status": status["status"] if fresh else "stale"}
        if not fresh:
            continue
        entry["in_flight"] += int(status.get("in_flight") or 0)
        if status.get("lag") is not None:
            entry["lag"] = max(int(status["lag"]), entry["lag"] or 0)
    for entry in out.values():
        states = {r["status"] for r in entry["replicas"].values()}
        entry["status"] = next((s for s in ("up", "paused", "down") if s in states), "stale")
    return out


@dataclass(frozen=True)
class HealthParts:
    """What a health center is made of (``noa.build.health`` makes them from the config)."""

    monitor: HealthMonitor
    hub: BreakerHub
    metrics: MetricsBoard
    interval_s: float  # between two rounds of active probes
    relay: RedisBreakerRelay | None = None  # other apps on the same Redis


class HealthCenter:
    """Probes every provider every ``interval_s`` (no tokens spent), holds the breaker state and
    traffic stats every routing replica shares, and the Gateways' metrics (one scrape, every
    replica's totals)."""

    def __init__(
        self,
        parts: HealthParts,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._monitor = parts.monitor
        self._hub = parts.hub
        self._metrics = parts.metrics
        self._interval = parts.interval_s
        self._relay = parts.relay
        self._sleep = sleep
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._bridges: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    def start(self) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(self._loop()))
        if self._relay is not None:
            self._relay.start()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.check_now()
            await self._sleep(self._interval)

    async def snapshot(self) -> dict[str, Any]:
        return {
            "providers": self._monitor.snapshot(),
            "breakers": self._hub.snapshot()["breakers"],
            "traffic": self._hub.traffic_totals(),
            "bridges": bridge_states(self._bridges, self._clock()),
        }

    async def check_now(self) -> dict[str, Any]:
        probes = await self._monitor.check_all()
        self._hub.set_down(frozenset(n for n, p in probes.items() if p["status"] == "down"))
        return await self.snapshot()

    # -- shared breakers (a BreakerLink in every Gateway / Router replica) --------------------

    async def report(self, key: str, state: str, remaining_s: float) -> int:
        return self._hub.report(key, state, remaining_s)

    async def claim_probe(self, key: str) -> bool:
        if not self._hub.claim_probe(key):  # one replica of this app
            return False
        return self._relay is None or await self._relay.claim(key)  # one app of all

    async def watch(self, version: int) -> dict[str, Any]:
        return await self._hub.watch(version)

    async def report_traffic(self, replica: str, stats: dict[str, Any]) -> None:
        self._hub.report_traffic(replica, stats)

    # -- metrics ------------------------------------------------------------------------------

    async def report_metrics(self, replica: str, snapshot: Snapshot) -> None:
        self._metrics.report(replica, snapshot)

    async def report_bridge(self, replica: str, snapshot: Snapshot, status: dict[str, Any]) -> None:
        """A queue bridge replica's metrics and health (``replica``: ``bridge:<name>:<id>``)."""
        self._metrics.report(replica, snapshot)
        _, name, rest = replica.split(":", 2) if replica.count(":") >= 2 else ("", replica, "")
        self._bridges[(name, rest)] = (self._clock(), dict(status))
        if len(self._bridges) > 1000:  # replicas come and go: the oldest reports leave
            oldest = sorted(self._bridges, key=lambda k: self._bridges[k][0])[:100]
            for key in oldest:
                del self._bridges[key]

    async def metrics(
        self, replica: str | None = None, snapshot: Snapshot | None = None
    ) -> Snapshot:
        """Every replica's totals; the asking replica may hand in its latest first."""
        if replica is not None and snapshot is not None:
            self._metrics.report(replica, snapshot)
        total = self._metrics.total()
        total.update(breaker_series(self._hub.snapshot()["breakers"]))  # shared: the truth
        return total

    async def aclose(self) -> None:
        await stop_tasks(self._tasks)
        if self._relay is not None:
            await self._relay.aclose()


class RemoteHealth:
    """``HealthView`` over a handle to the HealthActor (anything shaped like a Serve
    ``DeploymentHandle``: ``handle.method.remote(...)``)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    async def snapshot(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._handle.snapshot.remote()
        return result

    async def report(self, key: str, state: str, remaining_s: float) -> int:
        result: int = await self._handle.report.remote(key, state, remaining_s)
        return result

    async def claim_probe(self, key: str) -> bool:
        result: bool = await self._handle.claim_probe.remote(key)
        return result

    async def watch(self, version: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._handle.watch.remote(version)
        return result

    async def report_traffic(self, replica: str, stats: dict[str, Any]) -> None:
        await self._handle.report_traffic.remote(replica, stats)

    async def report_metrics(self, replica: str, snapshot: Snapshot) -> None:
        await self._handle.report_metrics.remote(replica, snapshot)

    async def report_bridge(self, replica: str, snapshot: Snapshot, status: dict[str, Any]) -> None:
        await self._handle.report_bridge.remote(replica, snapshot, status)

    async def metrics(
        self, replica: str | None = None, snapshot: Snapshot | None = None
    ) -> Snapshot:
        result: Snapshot = await self._handle.metrics.remote(replica, snapshot)
        return result
