"""The probes: cheap, never calling a model, and telling which dependency is down."""

from __future__ import annotations

import httpx

from noa.build import gateway
from noa.config import parse_config
from noa.http.app import create_app
from noa.observability.dependencies import DependencyChecks
from noa.storage.db import LazyDatabase
from noa.storage.migrations import migrate
from noa.testing.fake_upstream import FakeUpstream
from noa.testing.ports import free_port
from noa.testing.server import ServerThread


def test_process_probes_answer_without_touching_a_provider(
    upstream_env: dict[str, str], fake: FakeUpstream
) -> None:
    config = parse_config({"providers": {"openai": {"kind": "openai"}}})
    service = gateway.inprocess_service(config, upstream_env)
    server = ServerThread(create_app(service, master_key="k")).start()
    try:
        for path in ("/health", "/health/live", "/health/startup", "/health/detailed"):
            response = httpx.get(f"{server.base_url}{path}", timeout=10)  # no key needed
            assert response.status_code == 200, path
        detailed = httpx.get(f"{server.base_url}/health/detailed", timeout=10).json()
        assert detailed["uptime_s"] >= 0 and detailed["memory"]["rss_bytes"] > 0
        assert "percent" in detailed["cpu"]
    finally:
        server.stop()
    assert fake.requests == []


async def test_dependency_checks_name_what_is_down(tmp_path: object) -> None:
    db = LazyDatabase(f"sqlite:///{tmp_path}/noa.db", migrate)
    healthy = DependencyChecks(db, None)
    assert (await healthy.check())["database"]["status"] == "ok"
    dead_redis = DependencyChecks(db, f"redis://127.0.0.1:{free_port()}/0", timeout_s=1)
    result = await dead_redis.check()
    assert result["database"]["status"] == "ok"
    assert result["redis"]["status"] == "down" and result["redis"]["error"]
    await dead_redis.aclose()
    dead_db = DependencyChecks(
        LazyDatabase(f"postgresql://u@127.0.0.1:{free_port()}/x", migrate), None, 1
    )
    assert (await dead_db.check())["database"]["status"] == "down"
    await db.close()
