"""What one app shares among its replicas (the HealthActor's core): the active provider
probes, the breaker hub (and its Redis relay to other apps), and the replicas' metrics.

Every method is a coroutine so the same object serves in-process callers and, behind the
HealthActor, handle callers (``RemoteHealth``) alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
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
        self, parts: HealthParts, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        self._monitor = parts.monitor
        self._hub = parts.hub
        self._metrics = parts.metrics
        self._interval = parts.interval_s
        self._relay = parts.relay
        self._sleep = sleep
        self._tasks: list[asyncio.Task[None]] = []

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

    async def metrics(
        self, replica: str | None = None, snapshot: Snapshot | None = None
    ) -> Snapshot:
        result: Snapshot = await self._handle.metrics.remote(replica, snapshot)
        return result
