"""Breaker state shared through a real Redis by separate NOA apps (one BreakerHub and relay each):
transitions cross over, a due breaker is probed by one app, an app that starts later reads what
is open, and Redis going away (killed mid-test, then back) costs only the sharing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from test_cache_stores import PrivateRedis, service

from noa.routing.breakers.hub import BreakerHub
from noa.routing.breakers.redis import KEY, PROBE, RedisBreakerRelay, RelayOutbox

App = tuple[BreakerHub, RedisBreakerRelay]


class Apps:
    """NOA apps on one Redis, as their HealthActors wire them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.relays: list[RedisBreakerRelay] = []

    async def start(self, *, wait: bool = True) -> App:
        outbox = RelayOutbox()
        hub = BreakerHub(on_report=outbox.put)
        relay = RedisBreakerRelay(
            hub, self.url, origin=uuid.uuid4().hex, outbox=outbox, retry_s=0.05
        )
        relay.start()
        self.relays.append(relay)
        if wait:
            await asyncio.wait_for(relay.subscribed.wait(), 10)
        return hub, relay

    async def close(self) -> None:
        for relay in self.relays:
            await relay.aclose()


@pytest.fixture
async def apps() -> AsyncIterator[Apps]:
    started = Apps(service("NOA_TEST_REDIS_URL"))
    yield started
    await started.close()


async def seen(
    hub: BreakerHub, check: Callable[[dict[str, Any]], bool], wait_s: float = 10
) -> dict[str, Any]:
    """The hub's breakers once ``check`` holds of them (the hub's own long poll, no sleeping)."""

    async def poll() -> dict[str, Any]:
        while True:
            snapshot = hub.snapshot()
            if check(snapshot["breakers"]):
                return dict(snapshot["breakers"])
            await hub.watch(snapshot["version"], timeout_s=1)

    return await asyncio.wait_for(poll(), wait_s)


def state_of(key: str, state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda breakers: breakers.get(key, {}).get("state") == state


async def test_a_breaker_one_app_opens_is_open_in_the_others_and_one_app_probes(apps: Apps) -> None:
    (a, a_relay), (b, b_relay) = await apps.start(), await apps.start()
    k = f"openai/{uuid.uuid4().hex}"
    raw = redis.Redis.from_url(apps.url)
    try:
        a.report(k, "open", 30)
        breakers = await seen(b, state_of(k, "open"))
        assert 25 < breakers[k]["remaining_s"] <= 30  # a duration: no two clocks compared
        assert 85_000 < await raw.pttl(KEY + k) <= 90_000  # open 30 s + the 60 s probe timeout
        assert not await a_relay.claim(k) and not await b_relay.claim(k)  # not due yet

        a.report(k, "open", 0)  # due now
        await seen(b, lambda br: br.get(k, {}).get("remaining_s") == 0)
        assert await b_relay.claim(k)  # exactly one app probes for all of them
        assert not await a_relay.claim(k)
        assert await b_relay.claim(k)  # its own claim stands

        b.report(k, "closed")  # the probe succeeded
        await seen(a, state_of(k, "closed"))
        assert (await raw.exists(KEY + k), await raw.exists(PROBE + k)) == (0, 0)

        b.report(k, "open", 30)
        await seen(a, state_of(k, "open"))
        c, _ = await apps.start()  # an app that starts later reads what Redis holds open
        assert 25 < c.snapshot()["breakers"][k]["remaining_s"] <= 30
        assert a_relay.counts["received"] >= 2 and b_relay.counts["sent"] >= 2
    finally:
        await raw.aclose()


async def test_an_app_ignores_its_own_messages_and_malformed_ones(apps: Apps) -> None:
    (a, a_relay), (b, _) = await apps.start(), await apps.start()
    k = f"anthropic/{uuid.uuid4().hex}"
    raw = redis.Redis.from_url(apps.url)
    try:
        await raw.publish("noa:breakers", b"not json")
        await raw.publish("noa:breakers", b'{"origin": "x"}')
        a.report(k, "open", 30)
        await seen(b, state_of(k, "open"))
        a.report(k, "closed")
        await seen(b, state_of(k, "closed"))
        b.report(k, "open", 5)  # after a's own messages on the channel, so a has read those
        await seen(a, state_of(k, "open"))
        assert a_relay.counts["received"] == 1  # only b's: its own two never came back
    finally:
        await raw.aclose()


async def test_redis_going_away_costs_only_the_sharing(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path)
    apps = Apps(server.url)
    try:
        (a, a_relay), (b, _) = await apps.start(), await apps.start()
        a.report("openai/gpt", "open", 30)
        await seen(b, state_of("openai/gpt", "open"))

        server.kill()
        a.report("openai/other", "open", 30)  # not shared, and not an error for anyone
        assert a.snapshot()["breakers"]["openai/other"]["state"] == "open"
        assert await asyncio.wait_for(a_relay.claim("openai/gpt"), 2)  # probe rather than never

        server.start()  # back on the same port: the relays subscribe again and read the keys
        for _ in range(100):
            a.report("openai/later", "open", 30)
            try:
                await seen(b, state_of("openai/later", "open"), wait_s=0.5)
                break
            except TimeoutError:
                continue
        else:
            pytest.fail("the apps did not share breakers again once Redis was back")
        assert a_relay.counts["errors"] >= 1
    finally:
        await apps.close()
        server.kill()
