"""CacheActor, LimiterActor and HealthActor: one per app, shared by every Gateway replica."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from noa import assembly
from noa.breaker import Change
from noa.breaker_hub import BreakerHub, BreakerLink
from noa.breaker_redis import RedisBreakerRelay
from noa.cache_flight import LocalBoard, State
from noa.cache_store import TtlLru
from noa.config import parse_config
from noa.health import HealthMonitor
from noa.limiter import LocalLimiter
from noa.limits import Decision, Reserve, Take
from noa.metrics import MetricsBoard, Snapshot, breaker_series
from noa.providers.remote import RemoteProvider
from noa.router import Router


def link_to_health(router: Router, health: DeploymentHandle, replica: str) -> BreakerLink:
    """Share ``router``'s breakers with every other replica through the HealthActor."""

    async def publish(change: Change) -> None:
        await health.report.remote(change.key, change.state.value, change.remaining_s)

    async def watch(version: int) -> dict[str, Any]:
        result: dict[str, Any] = await health.watch.remote(version)
        return result

    async def claim(key: str) -> bool:
        result: bool = await health.claim_probe.remote(key)
        return result

    async def traffic(stats: dict[str, Any]) -> None:
        await health.report_traffic.remote(replica, stats)

    def on_down(down: frozenset[str]) -> None:
        router.down = down

    router.breakers.claim_probe = claim
    link = BreakerLink(
        router.breakers,
        publish,
        watch,
        on_down=on_down,
        traffic=(lambda: router.stats.snapshot(), traffic),
    )
    link.start()
    return link


class ActorTier:
    """The response cache's L2 over the CacheActor (when no Redis is configured)."""

    name = "l2"

    def __init__(self, handle: DeploymentHandle) -> None:
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


@serve.deployment
class CacheActor:
    """The shared in-memory tier when no Redis is configured."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        shared = parse_config(config or {}).cache.shared
        self._store = TtlLru(shared.max_entries, shared.ttl_s)
        self._board = LocalBoard(self._store)

    def get(self, key: str) -> Any | None:
        return self._store.get(key)

    def set(self, key: str, value: Any, ttl_s: float | None = None) -> None:
        self._store.set(key, value, ttl_s)

    def delete(self, key: str) -> bool:
        return self._store.delete(key)

    def flight(self, key: str, owner: str, lease_s: float) -> tuple[bytes | None, State]:
        return self._board.flight(key, owner, lease_s)

    def flight_done(self, key: str, owner: str, linger_s: float) -> None:
        self._board.flight_done(key, owner, linger_s)

    def stats(self) -> dict[str, int]:
        return self._store.stats() | {"leases": len(self._board.leases)}


class ActorLimiter:
    """A ``Limiter`` over the LimiterActor: one place decides for every Gateway replica."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle

    async def admit(
        self, takes: list[Take], reserves: list[Reserve], principal: str | None = None
    ) -> Decision:
        wire = await self._handle.admit.remote(takes, reserves, principal)
        return Decision.from_wire(wire)

    async def adjust(
        self, tokens: dict[str, tuple[float, float]], dollars: dict[str, float]
    ) -> None:
        await self._handle.adjust.remote(tokens, dollars)

    async def revoke(self, principal: str) -> None:
        await self._handle.revoke.remote(principal)


@serve.deployment
class LimiterActor:
    """Rate limits and budgets for every Gateway replica when there are several and no Redis:
    each decision is one atomic step here, so limits are exact across replicas."""

    def __init__(self) -> None:
        self._limiter = LocalLimiter()

    async def admit(
        self, takes: list[Take], reserves: list[Reserve], principal: str | None
    ) -> dict[str, Any]:
        return (await self._limiter.admit(takes, reserves, principal)).to_wire()

    async def adjust(
        self, tokens: dict[str, tuple[float, float]], dollars: dict[str, float]
    ) -> None:
        await self._limiter.adjust(tokens, dollars)

    async def revoke(self, principal: str) -> None:
        await self._limiter.revoke(principal)


@serve.deployment
class HealthActor:
    """Probes every provider on an interval (no tokens spent), and holds the breaker state and
    traffic stats every routing replica shares, and the Gateways' metrics (one scrape, every
    replica's totals)."""

    async def __init__(  # type: ignore[misc]  # Serve awaits async constructors
        self, config: dict[str, Any], local: dict[str, DeploymentHandle]
    ) -> None:
        cfg = parse_config(config)
        self._providers: dict[str, Any] = assembly.cloud_providers(cfg)
        for name, handle in local.items():
            self._providers[name] = RemoteProvider(name, "llamacpp", handle)
        self._monitor = HealthMonitor({n: p.check for n, p in self._providers.items()})
        self._hub = BreakerHub()
        self._relay: RedisBreakerRelay | None = None
        redis_url = cfg.redis.url()
        if redis_url and cfg.routing.breaker.share_through_redis:  # other apps on this Redis
            self._relay = RedisBreakerRelay(self._hub, redis_url, origin=uuid.uuid4().hex)
            self._hub.on_report = self._relay.forward
            self._relay.start()
        self._metrics = MetricsBoard()
        self._interval = cfg.deployment.health_check_interval_s
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.check_now()
            await asyncio.sleep(self._interval)

    def snapshot(self) -> dict[str, Any]:
        return {
            "providers": self._monitor.snapshot(),
            "breakers": self._hub.snapshot()["breakers"],
            "traffic": self._hub.traffic_totals(),
        }

    async def check_now(self) -> dict[str, Any]:
        probes = await self._monitor.check_all()
        self._hub.set_down(frozenset(n for n, p in probes.items() if p["status"] == "down"))
        return self.snapshot()

    # -- shared breakers (BreakerLink in every Gateway / Router replica) -------------------------

    def report(self, key: str, state: str, remaining_s: float) -> int:
        return self._hub.report(key, state, remaining_s)

    async def claim_probe(self, key: str) -> bool:
        if not self._hub.claim_probe(key):  # one replica of this app
            return False
        return self._relay is None or await self._relay.claim(key)  # one app of all

    async def watch(self, version: int) -> dict[str, Any]:
        return await self._hub.watch(version)

    def report_traffic(self, replica: str, stats: dict[str, Any]) -> None:
        self._hub.report_traffic(replica, stats)

    # -- metrics ------------------------------------------------------------------------------

    def report_metrics(self, replica: str, snapshot: Snapshot) -> None:
        self._metrics.report(replica, snapshot)

    def metrics(self, replica: str | None = None, snapshot: Snapshot | None = None) -> Snapshot:
        """Every replica's totals; the asking replica may hand in its latest first."""
        if replica is not None and snapshot is not None:
            self._metrics.report(replica, snapshot)
        total = self._metrics.total()
        total.update(breaker_series(self._hub.snapshot()["breakers"]))  # shared: the truth
        return total
