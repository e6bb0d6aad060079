"""The response cache built from a ``NoaConfig``: its tiers and the single flight across
replicas."""

from __future__ import annotations

from collections.abc import Mapping

from noa.cache.flight import FlightStore, SharedFlights
from noa.cache.memory import MemoryTier, TtlLru
from noa.cache.redis import RedisTier
from noa.cache.response import ResponseCache
from noa.cache.sql import SqlTier
from noa.cache.tiers import Tier, TieredCache
from noa.config import NoaConfig
from noa.storage.db import Database

Environ = Mapping[str, str]


def cache_tiers(
    config: NoaConfig, db: Database, shared: Tier | None = None, environ: Environ | None = None
) -> TieredCache:
    """L1 in this process; L2 Redis when configured, else ``shared`` (the CacheActor in the
    Serve app); L3 the database. Each only when enabled."""
    c = config.cache
    tiers: list[Tier] = []
    ttls: list[float] = []
    if c.memory.enabled:
        tiers.append(MemoryTier(TtlLru(c.memory.max_entries, c.memory.ttl_s), c.memory.ttl_s))
        ttls.append(c.memory.ttl_s)
    if c.shared.enabled:
        redis_url = config.redis.url(environ)
        l2 = RedisTier(redis_url) if redis_url else shared
        if l2 is not None:
            tiers.append(l2)
            ttls.append(c.shared.ttl_s)
    if c.sql.enabled:
        tiers.append(SqlTier(db, max_entries=c.sql.max_entries))
        ttls.append(c.sql.ttl_s)
    return TieredCache(tiers, ttls)


def response_cache(
    config: NoaConfig, db: Database, shared: Tier | None = None, environ: Environ | None = None
) -> ResponseCache | None:
    """The response cache, or None when ``cache.enabled`` is off."""
    if not config.cache.enabled:
        return None
    tiers = cache_tiers(config, db, shared, environ)
    return ResponseCache(tiers, config.cache, shared_flights(config, tiers))


def shared_flights(config: NoaConfig, tiers: TieredCache) -> SharedFlights | None:
    """Single flight across replicas through the shared tier, when there is one and it is on."""
    flight = config.cache.single_flight
    if not flight.across_replicas:
        return None
    for tier in tiers.tiers:
        if tier.name == "l2" and isinstance(tier, FlightStore):
            return SharedFlights(
                tier,
                lease_s=flight.lease_s,
                max_wait_s=flight.max_wait_s,
                retry_after_s=tiers.retry_after_s,
            )
    return None
