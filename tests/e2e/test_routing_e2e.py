"""Fallback and shared circuit breakers through the deployed app (two Gateway replicas)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from deployments.serve_cluster import ServeCluster
from noa.testing.fake_upstream import FakeUpstream, Step

pytestmark = pytest.mark.e2e
MSG = [{"role": "user", "content": "hello"}]


async def _many(cluster: ServeCluster, n: int, concurrency: int) -> list[tuple[int, str]]:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=cluster.url,
        headers={"authorization": f"Bearer {cluster.master_key}"},
        limits=limits,
        timeout=60,
    ) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> tuple[int, str]:
            async with gate:
                r = await client.post(
                    "/v1/chat/completions", json={"model": "resilient", "messages": MSG}
                )
                return r.status_code, r.headers.get("x-noa-provider", "")

        return list(await asyncio.gather(*(one() for _ in range(n))))


def _shared_breaker(url: str, key: str) -> dict[str, Any]:
    health = httpx.get(f"{url}/health/providers", timeout=30).json()
    state: dict[str, Any] = health["breakers"].get(key, {})
    return state


def test_every_replica_routes_around_a_dead_provider(
    cluster: ServeCluster, flaky: FakeUpstream, fake: FakeUpstream
) -> None:
    flaky.reset()
    flaky.always = Step(status=500)
    try:
        started = time.monotonic()
        results = asyncio.run(_many(cluster, 100, 32))
        for _ in range(100):  # one replica opened it; the HealthActor holds it for both
            if _shared_breaker(cluster.url, "flaky/gpt-flaky").get("state") == "open":
                break
            time.sleep(0.1)
        assert _shared_breaker(cluster.url, "flaky/gpt-flaky")["state"] == "open"
        before = len(flaky.requests)
        results += asyncio.run(_many(cluster, 900, 32))
        assert [status for status, _ in results] == [200] * 1000
        assert {provider for _, provider in results} == {"openai"}
        cooldown = cluster.args["routing"]["breaker"]["cooldown_s"]
        probes = 1 + int((time.monotonic() - started) / cooldown)
        assert len(flaky.requests) - before <= probes  # counted at the dead upstream

        admin = {"authorization": f"Bearer {cluster.master_key}"}  # the details need one
        ready = httpx.get(f"{cluster.url}/health/ready", headers=admin, timeout=30)
        assert ready.status_code == 200, ready.text  # `resilient` still has a provider
        body = ready.json()
        assert body["models"]["resilient"] == "available"
        flaky_models = body["providers"]["flaky"]["models"]
        assert flaky_models["gpt-flaky"]["breaker"] == "open"
    finally:
        flaky.reset()
