"""The response cache through the deployed app: two Gateway replicas share hits through the
CacheActor (L2, no Redis configured) and persist them in SQLite under $NOA_HOME (L3)."""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path

import httpx
import pytest

from noa.testing.fake_upstream import FakeUpstream
from noa.testing.serve_cluster import ServeCluster

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
