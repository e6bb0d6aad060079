"""The facts the Gateway's start-up guards read from Ray (``deployments/startup.py``), as a
cluster deployed with ``serve deploy serve_config.yaml`` reports them; the guards' decisions
over those facts are unit-tested (``tests/unit/test_startup_guards.py``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from deployments.serve_cluster import ServeCluster

pytestmark = pytest.mark.e2e

FACTS = """
import asyncio, json, ray
from deployments.startup import nodes_for, serve_http_host
ray.init(logging_level="ERROR", log_to_driver=False)
print(json.dumps({"host": asyncio.run(serve_http_host()), "nodes": nodes_for(0.0, ray.nodes())}))
"""


def test_the_gateway_reads_where_serve_listens_and_how_many_nodes_can_host_it(
    cluster: ServeCluster,
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FACTS],
        env=cluster.driver_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    # serve_config.yaml's http_options.host, and the one node of the test cluster: the Gateway
    # replicas started (the session's other tests talk to them), so the guards let them
    assert facts == {"host": "127.0.0.1", "nodes": 1}
