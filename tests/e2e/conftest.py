"""One Ray cluster for every end-to-end test: ``ray start --head`` + ``serve deploy``."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from noa.testing.fake_upstream import FakeUpstream
from noa.testing.serve_cluster import ServeCluster

MASTER_KEY = "noa-e2e-master-key"


@pytest.fixture(scope="session")
def cluster(upstream: FakeUpstream, upstream_env: dict[str, str]) -> Iterator[ServeCluster]:
    serve_cluster = ServeCluster(upstream_env, MASTER_KEY)
    try:
        yield serve_cluster.start()
    finally:
        serve_cluster.stop()


@pytest.fixture(scope="session")
def client(cluster: ServeCluster) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{cluster.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=120
    )
