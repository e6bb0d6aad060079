"""The response cache through the deployed app: two Gateway replicas share hits (and single
flight) through the CacheActor (L2, no Redis configured) and persist them in SQLite under
$NOA_HOME (L3)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from pathlib import Path

import httpx
import pytest

from deployments.serve_cluster import ServeCluster
from noa.testing.fake_upstream import FakeUpstream, Step

pytestmark = pytest.mark.e2e


def test_replicas_share_hits_through_the_cache_actor_and_sqlite(
    cluster: ServeCluster, fake: FakeUpstream
) -> None:
    text = f"e2e cache {uuid.uuid4().hex}"
    body = {
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
    }
    tiers: list[str] = []
    with httpx.Client(
        base_url=cluster.url,
        headers={"authorization": f"Bearer {cluster.master_key}"},
        timeout=60,
    ) as http:
        first = http.post("/v1/chat/completions", json=body)
        assert first.status_code == 200, first.text
        assert first.headers["x-noa-cache"] == "miss"
        for _ in range(60):  # until the replica that did not go upstream answered too
            again = http.post("/v1/chat/completions", json=body)
            assert again.status_code == 200
            assert again.json()["choices"] == first.json()["choices"]
            tiers.append(again.headers["x-noa-cache"])
            if "hit-l2" in tiers:
                break
        stats = http.get("/health/cache").json()
    assert set(tiers) <= {"hit-l1", "hit-l2"}
    assert "hit-l2" in tiers  # the other replica's L1 missed; the shared CacheActor hit
    assert [r.body["messages"][0]["content"] for r in fake.requests].count(text) == 1
    assert stats["enabled"] and set(stats["tiers"]) == {"l1", "l2", "l3"}

    database = Path(os.environ["NOA_HOME"]) / "noa.db"
    with sqlite3.connect(database) as db:
        (rows,) = db.execute("SELECT count(*) FROM noa_response_cache").fetchone()
    assert rows >= 1  # persisted: survives a restart of the app


def test_identical_misses_across_replicas_make_one_upstream_call(
    cluster: ServeCluster, fake: FakeUpstream
) -> None:
    """Twenty identical requests at once, spread over both replicas by Serve: the replicas'
    first misses meet at the CacheActor's lease, so the upstream sees one call."""
    text = f"e2e flight {uuid.uuid4().hex}"
    body = {
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
    }
    headers = {"authorization": f"Bearer {cluster.master_key}"}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=cluster.url, headers=headers, timeout=60) as http:
            calls = [http.post("/v1/chat/completions", json=body) for _ in range(20)]
            return await asyncio.gather(*calls)

    fake.always = Step(delay_s=1.0)  # every request arrives while the first is upstream
    try:
        responses = asyncio.run(burst())
    finally:
        fake.always = None
    assert [r.status_code for r in responses] == [200] * 20, responses[0].text
    assert len({r.json()["choices"][0]["message"]["content"] for r in responses}) == 1
    assert [r.body["messages"][0]["content"] for r in fake.requests].count(text) == 1
    with httpx.Client(base_url=cluster.url, headers=headers, timeout=60) as http:
        seen = [http.get("/health/cache").json()["flights"] for _ in range(10)]
    assert any(f["led"] >= 1 for f in seen)  # the lease went through the CacheActor
    assert all(f["errors"] == 0 for f in seen)
