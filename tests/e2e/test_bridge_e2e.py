"""A queue bridge deployed with the app (``serve deploy``; ``queues:`` names one on the suite's
Redis Streams): a producer's messages become jobs the JobRunner runs on the fake upstream, and
their results come back on the reply stream; the bridge's health and metrics reach the
Gateway's ``/health/ready``, ``/status`` and ``/metrics``; Serve lists its deployment. Its
replica's process SIGKILLed mid-batch: Serve starts another, and every message is answered."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import httpx
import orjson
import psutil
import pytest
import redis
import yaml

from deployments.serve_cluster import BIN, ServeCluster

pytestmark = pytest.mark.e2e


def answers(r: redis.Redis, stream: str, want: set[str], timeout_s: float) -> dict[str, Any]:
    """The result messages on ``stream`` by id, once every id in ``want`` is there."""
    results: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    while not want <= set(results) and time.monotonic() < deadline:
        results = {}
        for _, fields in r.xrange(stream):
            message = orjson.loads(fields[b"body"])
            results.setdefault(message["id"], []).append(message)
        time.sleep(0.2)
    return results


def bridge_replicas() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any("QueueBridge-e2e" in part for part in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_messages_through_the_deployed_bridge(
    cluster: ServeCluster, bridge_streams: tuple[str, ...]
) -> None:
    source, reply_to, dead_letter = bridge_streams
    r = redis.Redis.from_url(os.environ["NOA_TEST_REDIS_URL"])
    try:
        for i in range(20):
            body = {"messages": [{"role": "user", "content": f"hello {i}"}]}  # default model
            r.xadd(source, {"body": orjson.dumps({"id": f"e2e-{i}", "body": body})})
        r.xadd(source, {"body": b"{oops", "message_id": "e2e-bad"})
        results: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 120
        while len(results) < 20 and time.monotonic() < deadline:
            for _, entries in r.xread({reply_to: "0-0"}, count=100, block=500) or []:
                for _, fields in entries:
                    message = orjson.loads(fields[b"body"])
                    results[message["id"]] = message
        assert sorted(results) == sorted(f"e2e-{i}" for i in range(20))
        assert all(m["status"] == "completed" for m in results.values())
        assert all(m["result"]["object"] == "chat.completion" for m in results.values())
        dead = r.xrange(dead_letter)
        assert [orjson.loads(f[b"body"])["reason"]["code"] for _, f in dead] == ["bad_json"]
    finally:
        r.close()

    headers = {"authorization": f"Bearer {cluster.master_key}"}
    deadline = time.monotonic() + 30  # reports arrive every few seconds
    while True:
        ready = httpx.get(f"{cluster.url}/health/ready", headers=headers, timeout=10).json()
        bridge = ready.get("bridges", {}).get("e2e", {})
        if bridge.get("status") == "up" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert bridge["status"] == "up" and bridge["kind"] == "redis"
    status = httpx.get(f"{cluster.url}/status", headers=headers, timeout=10).json()
    assert status["bridges"]["e2e"]["status"] == "up"
    stored = 'noa_bridge_messages_total{bridge="e2e",outcome="stored"} 20.0'
    deadline = time.monotonic() + 30  # the replica hands its counts in every 2 s
    while True:
        metrics = httpx.get(f"{cluster.url}/metrics", headers=headers, timeout=10).text
        if stored in metrics or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    bridge_lines = [line for line in metrics.splitlines() if line.startswith("noa_bridge")]
    assert stored in metrics, bridge_lines
    assert 'noa_bridge_messages_total{bridge="e2e",outcome="dead_letter"} 1.0' in metrics
    serve = cluster._run(str(BIN / "serve"), "status", "-a", cluster.dashboard, timeout=60)
    deployments = yaml.safe_load(serve)["applications"]["noa"]["deployments"]
    assert deployments["QueueBridge-e2e"]["status"] == "HEALTHY"

    # the replica's process killed mid-batch: nothing lost once Serve has started another
    (replica,) = bridge_replicas()
    r = redis.Redis.from_url(os.environ["NOA_TEST_REDIS_URL"])
    try:
        for i in range(200):
            body = {"messages": [{"role": "user", "content": f"again {i}"}]}
            r.xadd(source, {"body": orjson.dumps({"id": f"kill-{i}", "body": body})})
        deadline = time.monotonic() + 120
        while r.xlen(reply_to) <= 25 and time.monotonic() < deadline:  # some answered
            time.sleep(0.01)
        replica.send_signal(signal.SIGKILL)
        want = {f"kill-{i}" for i in range(200)}
        results = answers(r, reply_to, want, timeout_s=180)
        assert want <= set(results), f"{len(want - set(results))} never answered"
        for i in range(200):  # one job per message, however often it was delivered
            assert len({m["job_id"] for m in results[f"kill-{i}"]}) == 1
        (restarted,) = bridge_replicas()
        assert restarted.pid != replica.pid
    finally:
        r.close()
