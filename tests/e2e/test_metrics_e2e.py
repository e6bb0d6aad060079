"""One scrape of ``/metrics`` on the deployed app shows the totals of both Gateway replicas, and
Prometheus's own parser reads it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deployments.serve_cluster import ServeCluster

pytestmark = pytest.mark.e2e

CHAT_OK = {"method": "POST", "path": "/v1/chat/completions", "status": "200"}
CHAT_400 = {"method": "POST", "path": "/v1/chat/completions", "status": "400"}


def scrape(cluster: ServeCluster) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = httpx.get(f"{cluster.url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return sum(v for found, v in samples.get(name, []) if labels.items() <= found.items())


MODEL = "openai/gpt-metrics-e2e"  # no other test sends it: its provider counts are exact


# the replicas that hand in metrics: two Gateways, the JobRunner and the e2e queue bridge
REPORTING = 4


def reporting(cluster: ServeCluster, read: Callable[[], float] | None = None) -> float:
    """How many replicas report, once that is REPORTING or after a replica's stale time: a
    replica killed by an earlier test (the bridge's) counts until its reports are stale."""
    read = read or (lambda: value(scrape(cluster), "noa_metrics_replicas"))
    deadline = time.monotonic() + 45  # the board's stale_s is 30 s
    while (count := read()) != REPORTING and time.monotonic() < deadline:
        time.sleep(1)
    return count


def dashboard(cluster: ServeCluster) -> dict[str, Any]:
    response = httpx.get(
        f"{cluster.url}/v1/dashboard",
        headers={"authorization": f"Bearer {cluster.master_key}"},
        timeout=30,
    )
    assert response.status_code == 200
    return response.json()


def settled(cluster: ServeCluster) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A scrape once every replica has handed in its counts (two scrapes a push apart agree):
    the requests of earlier tests must not land in this test's difference."""
    previous = scrape(cluster)
    for _ in range(20):
        time.sleep(2.5)  # longer than a replica's push interval
        current = scrape(cluster)
        chat = {"path": "/v1/chat/completions"}  # scrapes count too: compare the API's counts
        if value(current, "http_requests_total", **chat) == value(
            previous, "http_requests_total", **chat
        ):
            return current
        previous = current
    raise AssertionError("the metrics never settled")


async def _traffic(cluster: ServeCluster, good: int, bad: int) -> list[int]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "count me"}]}
    headers = {"authorization": f"Bearer {cluster.master_key}"}
    async with httpx.AsyncClient(base_url=cluster.url, headers=headers, timeout=60) as client:
        sent = [client.post("/v1/chat/completions", json=body) for _ in range(good)]
        sent += [client.post("/v1/chat/completions", json={"model": 3}) for _ in range(bad)]
        return [r.status_code for r in await asyncio.gather(*sent)]


def test_one_scrape_counts_the_requests_of_both_replicas(cluster: ServeCluster) -> None:
    before = settled(cluster)
    statuses = asyncio.run(_traffic(cluster, good=40, bad=6))
    assert sorted(statuses) == [200] * 40 + [400] * 6
    deadline = time.monotonic() + 30
    provider = {"model": MODEL, "status": "200"}
    while True:  # the other replica's counts arrive within its push interval
        after = scrape(cluster)
        calls = value(after, "ai_provider_requests_total", **provider)
        ok = value(after, "http_requests_total", **CHAT_OK) - value(
            before, "http_requests_total", **CHAT_OK
        )
        bad = value(after, "http_requests_total", **CHAT_400) - value(
            before, "http_requests_total", **CHAT_400
        )
        if (calls, ok, bad) == (40, 40, 6) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (calls, ok, bad) == (40, 40, 6)
    assert reporting(cluster) == REPORTING
    errors = value(after, "http_errors_total", error_category="client") - value(
        before, "http_errors_total", error_category="client"
    )
    assert errors == 6
    count = value(
        after, "http_request_duration_seconds_count", path="/v1/chat/completions"
    ) - value(before, "http_request_duration_seconds_count", path="/v1/chat/completions")
    assert count == 46


def test_status_and_readiness_report_the_deployment(cluster: ServeCluster) -> None:
    admin = {"authorization": f"Bearer {cluster.master_key}"}  # the details need an admin
    public = httpx.get(f"{cluster.url}/status", timeout=30).json()
    assert public["replica"] and "deployments" not in public
    status = httpx.get(f"{cluster.url}/status", headers=admin, timeout=30).json()
    assert status["version"] and status["replica"]
    assert status["deployments"]["gateway"]["num_replicas"] == 2
    assert "resilient" in status["models"]
    assert status["dependencies"]["database"]["status"] == "ok"
    # every model has a provider that answers (the fake upstreams, the bundled model) and the
    # database is up: ready, on whichever replica answers
    for _ in range(4):
        ready = httpx.get(f"{cluster.url}/health/ready", headers=admin, timeout=30)
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        assert ready.json()["dependencies"]["database"]["status"] == "ok"
    for path in ("/health/live", "/health/startup", "/health/detailed"):
        assert httpx.get(f"{cluster.url}{path}", timeout=30).status_code == 200


def test_the_dashboard_data_covers_both_replicas_and_needs_an_admin(
    cluster: ServeCluster,
) -> None:
    assert httpx.get(f"{cluster.url}/dashboard", timeout=30).text.startswith("<!doctype html>")
    assert httpx.get(f"{cluster.url}/v1/dashboard", timeout=30).status_code == 401
    data = dashboard(cluster)
    assert data["requests_total"] > 0
    assert reporting(cluster, lambda: dashboard(cluster)["replicas"]) == REPORTING
    assert "openai" in data["providers"]
