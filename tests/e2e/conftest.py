"""One Ray cluster for every end-to-end test: ``ray start --head`` + ``serve deploy``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import openai
import pytest

from deployments.serve_cluster import ServeCluster
from noa.testing.fake_upstream import FakeUpstream

MASTER_KEY = "noa-e2e-master-key"


BREAKER_COOLDOWN_S = 60.0
BRIDGE_STREAMS = tuple(f"noa-e2e-{n}-{uuid.uuid4().hex[:6]}" for n in ("in", "out", "dead"))


@pytest.fixture(scope="session")
def flaky(upstream_key: str) -> Iterator[FakeUpstream]:
    """A second OpenAI-compatible upstream, first in the `resilient` chain; tests break it."""
    fake = FakeUpstream(api_key=upstream_key).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def cluster(
    upstream: FakeUpstream, upstream_env: dict[str, str], flaky: FakeUpstream
) -> Iterator[ServeCluster]:
    # serve_config.yaml as shipped, plus a chain [flaky, upstream] and two Gateway replicas
    # (limits, breakers and metrics must hold across replicas)
    args = {
        "providers": {"flaky": {"kind": "openai", "base_url": f"{flaky.base_url}/v1"}},
        "models": [
            {
                "id": "local/smollm2-135m-instruct",
                "aliases": ["smollm2"],
                "provider": "local",
                "upstream": "smollm2-135m-instruct",
                "context_length": 8192,
                "owned_by": "HuggingFaceTB",
            },
            {
                "id": "resilient",
                "chain": [
                    {"provider": "flaky", "upstream": "gpt-flaky"},
                    {"provider": "openai", "upstream": "gpt-steady"},
                ],
            },
        ],
        "routing": {"breaker": {"cooldown_s": BREAKER_COOLDOWN_S}},
        "deployment": {"gateway": {"num_replicas": 2}},
        # a queue bridge on the suite's Redis (Streams): tests/e2e/test_bridge_e2e.py
        "queues": [
            {
                "name": "e2e",
                "kind": "redis",
                "url_env": "NOA_TEST_REDIS_URL",
                "source": BRIDGE_STREAMS[0],
                "reply_to": BRIDGE_STREAMS[1],
                "dead_letter": BRIDGE_STREAMS[2],
                "default_model": "resilient",
                "options": {"claim_idle_s": 2},  # a killed replica's entries: soon claimed
            }
        ],
    }
    serve_cluster = ServeCluster(upstream_env, MASTER_KEY, args)
    try:
        yield serve_cluster.start()
    finally:
        serve_cluster.stop()


@pytest.fixture(scope="session")
def bridge_streams() -> tuple[str, ...]:
    """The e2e queue bridge's source, reply and dead-letter streams."""
    return BRIDGE_STREAMS


@pytest.fixture(scope="session")
def client(cluster: ServeCluster) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{cluster.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=120
    )
