"""Limits through the deployed app with two Gateway replicas and no Redis: the LimiterActor
decides for both, so a key's limit is exact; a revocation holds on every replica at once."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from deployments.serve_cluster import ServeCluster

pytestmark = pytest.mark.e2e


def _key(cluster: ServeCluster, **fields: object) -> tuple[str, str]:
    response = httpx.post(
        f"{cluster.url}/v1/admin/keys",
        json={"name": "e2e", **fields},
        headers={"authorization": f"Bearer {cluster.master_key}"},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["key"], body["id"]


async def _burst(cluster: ServeCluster, key: str, n: int) -> list[httpx.Response]:
    body = {"model": "openai/gpt-e2e", "messages": [{"role": "user", "content": "limit"}]}
    async with httpx.AsyncClient(
        base_url=cluster.url, headers={"authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        return await asyncio.gather(
            *(client.post("/v1/chat/completions", json=body) for _ in range(n))
        )


def test_two_gateway_replicas_accept_exactly_the_limit(cluster: ServeCluster) -> None:
    key, key_id = _key(cluster, rpm=6)
    responses = asyncio.run(_burst(cluster, key, 18))
    assert sorted(r.status_code for r in responses) == [200] * 6 + [429] * 12
    assert all(
        r.headers.get("x-ratelimit-limit-requests") == "6" for r in responses if r.is_success
    )

    httpx.delete(
        f"{cluster.url}/v1/admin/keys/{key_id}",
        headers={"authorization": f"Bearer {cluster.master_key}"},
        timeout=60,
    ).raise_for_status()
    after = asyncio.run(_burst(cluster, key, 6))  # both replicas, one of them with it cached
    assert {r.status_code for r in after} == {401}

    # usage records are written in batches: the six answers are counted once they land
    # (refusals were never admitted, so they are not usage)
    deadline = time.monotonic() + 60
    while True:
        rows = httpx.get(
            f"{cluster.url}/v1/admin/usage?group_by=key&key_id={key_id}",
            headers={"authorization": f"Bearer {cluster.master_key}"},
            timeout=60,
        ).json()["data"]
        if (rows and rows[0]["requests"] >= 6) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row["key"], row["requests"], row["errors"]) == (key_id, 6, 0)
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
