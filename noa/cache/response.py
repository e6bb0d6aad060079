"""The response cache in front of the router: policy, keys, hits, stores and single flight.

Policy, most specific first: the request (``x-noa-cache: use | bypass | refresh`` header, or the
``noa_cache`` body field), the model's ``cache``, then ``cache.default``. A request that is not
reproducible (no temperature 0 and no seed) is only cached when the request asks for it or
``cache.nondeterministic`` is on. ``refresh`` skips the lookup and stores the new answer.

An entry is the answer in the shape it arrived in (a body, or a complete stream's chunks) with
the route that produced it; either kind of request is served from either shape. A stream is
stored only once it completed; a failed or abandoned one is never stored. Concurrent identical
misses share one upstream call: the first goes upstream, the others wait for its entry; with
``flights``, the first misses of several replicas meet at the shared tier too, so one call
serves them all (``noa.cache.flight``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

import orjson

from noa.cache.flight import Lease, SharedFlights
from noa.cache.key import cache_key, deterministic
from noa.cache.replay import assemble, replay
from noa.cache.tiers import Hit, TieredCache
from noa.config import CacheConfig
from noa.errors import InvalidRequestError
from noa.routing.plan import Plan
from noa.routing.results import PrimedStream, Routed, RouteInfo

Body = dict[str, Any]
Policy = Literal["use", "bypass", "refresh"]
POLICIES = ("use", "bypass", "refresh")
BODY_FIELD = "noa_cache"
# the answer of an identical request's upstream call (single flight): like a hit, it made no
# call of its own, so it costs nothing and counts no provider request, tokens or quota
FOLLOWED = "hit-flight"
MAX_PENDING_STORES = 1000  # entries being written to the tiers at once, at most
logger = logging.getLogger("noa.cache")


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the cache decided for one request."""

    key: str | None  # None: bypass
    policy: Policy


def requested_policy(header: str | None, body: Body) -> Policy | None:
    """The policy the request asks for (header wins over the body field), if any."""
    value = header if header is not None else body.get(BODY_FIELD)
    if value is None:
        return None
    if value not in POLICIES:
        raise InvalidRequestError(
            f"Invalid cache policy {value!r}: expected one of use, bypass, refresh",
            param=BODY_FIELD if header is None else None,
            code="invalid_cache_policy",
        )
    return cast(Policy, value)


def _encode(kind: str, data: Any, info: RouteInfo) -> bytes:
    return orjson.dumps({"v": 1, "kind": kind, "data": data, "route": info.metadata()})


async def _replayed(chunks: list[Body]) -> AsyncGenerator[Body, None]:
    for chunk in chunks:
        yield chunk


class ResponseCache:
    """Decides, looks up and stores; the service calls it around the router."""

    def __init__(
        self,
        tiers: TieredCache,
        config: CacheConfig,
        flights: SharedFlights | None = None,
    ) -> None:
        self.tiers = tiers
        self.config = config
        self.flights = flights
        self._flights: dict[str, asyncio.Future[bytes | None]] = {}
        self.counts: dict[str, int] = {
            "bypass": 0,
            "miss": 0,
            "shared": 0,
            "shared_across": 0,
            "too_large": 0,
            "store_dropped": 0,
        }
        self._tasks: set[asyncio.Task[None]] = set()

    def stats(self) -> dict[str, Any]:
        """Answers by outcome, and hits, misses and errors per tier."""
        tiers = {
            name: {
                "hits": s.hits,
                "misses": s.misses,
                "errors": s.errors,
                "skipped": s.skipped,
                "down": bool(s.down_until),
            }
            for name, s in self.tiers.stats.items()
        }
        stats: dict[str, Any] = {"answers": dict(self.counts), "tiers": tiers}
        if self.flights is not None:
            stats["flights"] = dict(self.flights.counts)
        return stats

    def decide(self, plan: Plan, asked: Policy | None, tenant: str | None) -> Lookup:
        target = plan.target
        policy = cast(Policy, asked or target.cache_policy or self.config.default)
        if policy == "bypass" or not self.config.enabled:
            return Lookup(None, "bypass")
        operation, body = plan.operation.value, plan.body
        reproducible = self.config.nondeterministic or deterministic(operation, body)
        if asked is None and not reproducible:
            return Lookup(None, "bypass")
        scope = None if target.cache_shared else tenant
        return Lookup(cache_key(operation, target.model, body, scope), policy)

    # -- answers from entries -------------------------------------------------------------------

    def _from_entry(self, raw: bytes, stream: bool, tier: str) -> Routed | PrimedStream:
        entry = orjson.loads(raw)
        route = entry["route"]
        info = RouteInfo(route["model"], route["provider"], route["upstream"], 0, 0, cache=tier)
        if stream:
            chunks = entry["data"] if entry["kind"] == "chunks" else replay(entry["data"])
            return PrimedStream(info, None, _replayed(chunks), None)
        body = entry["data"] if entry["kind"] == "body" else assemble(entry["data"])
        return Routed(body, info)

    async def lookup(self, lookup: Lookup, stream: bool) -> Routed | PrimedStream | None:
        if lookup.key is None or lookup.policy == "refresh":
            return None
        hit: Hit | None = await self.tiers.get(lookup.key)
        if hit is None:
            return None
        return self._from_entry(hit.value, stream, f"hit-{hit.tier}")

    # -- misses ---------------------------------------------------------------------------------

    async def through(
        self,
        lookup: Lookup,
        stream: bool,
        call: Callable[[], Awaitable[Routed | PrimedStream]],
    ) -> Routed | PrimedStream:
        """The answer to a miss: the upstream's (stored once complete), or, when an identical
        request is already on its way upstream, that request's answer."""
        key = lookup.key
        if key is None:
            self.counts["bypass"] += 1
            return _labelled(await call(), "bypass")
        self.counts["miss"] += 1
        flight = self._flights.get(key)
        if flight is not None:
            raw = await asyncio.shield(flight)
            if raw is not None:
                self.counts["shared"] += 1
                return self._from_entry(raw, stream, FOLLOWED)
            return _labelled(await call(), "miss")  # the first one failed: go ourselves
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        lease: Lease | None = None

        def finish(raw: bytes | None, *, store: bool = True) -> None:
            if self._flights.get(key) is future:
                del self._flights[key]
            if raw is not None and len(raw) > self.config.max_entry_bytes:
                self.counts["too_large"] += 1
                raw = None
            if not future.done():
                future.set_result(raw)
            if not store:
                return
            if raw is not None and len(self._tasks) >= MAX_PENDING_STORES:
                self.counts["store_dropped"] += 1  # the stores cannot keep up: keep memory bounded
                raw = None
            if raw is not None or lease is not None:  # stored off the hot path
                self._spawn(self._store(key, raw, lease))

        try:
            if self.flights is not None and lookup.policy != "refresh":  # refresh: a new answer
                joined = await self.flights.join(key)
                if isinstance(joined, bytes):  # another replica's call answered it
                    finish(joined, store=False)
                    self.counts["shared_across"] += 1
                    self._spawn(self.tiers.fill_above(key, joined, "l2"))
                    return self._from_entry(joined, stream, FOLLOWED)
                lease = joined
            result = await call()
        except BaseException:
            finish(None)
            raise
        if isinstance(result, Routed):
            finish(_encode("body", result.body, result.info))
            return _labelled(result, "miss")
        return PrimedStream(
            replace(result.info, cache="miss"), None, _recorded(result, finish), None
        )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the entries still being stored (a clean shutdown; tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()
        for tier in self.tiers.tiers:
            aclose = getattr(tier, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _store(self, key: str, raw: bytes | None, lease: Lease | None) -> None:
        try:
            if raw is not None:
                await self.tiers.set(key, raw)
        except Exception:  # each tier already isolates its failures; this is a last guard
            logger.warning("could not store a cache entry", exc_info=True)
        finally:
            if lease is not None:  # stored (or not storable): other replicas may look now
                await lease.end()


def _labelled(result: Routed | PrimedStream, label: str) -> Routed | PrimedStream:
    if isinstance(result, Routed):
        return Routed(result.body, replace(result.info, cache=label))
    return result.relabel(cache=label)


async def _recorded(
    stream: PrimedStream, finish: Callable[[bytes | None], None]
) -> AsyncGenerator[Body, None]:
    """The stream as it goes to the client; its chunks are stored only if it completes."""
    chunks: list[Body] = []
    complete = False
    try:
        async for chunk in stream:
            chunks.append(chunk)
            yield chunk
        complete = True
    finally:
        await stream.aclose()
        finish(_encode("chunks", chunks, stream.info) if complete and chunks else None)
