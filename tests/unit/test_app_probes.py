"""The app's probes (``/health/ready``, ``/status``, ``/health/providers``, ``/health/cache``)
without Ray: a Gateway wired in this process by ``noa.build.gateway``, its shared health a
``HealthCenter`` here too (what the HealthActor holds when served). Anyone gets their status
and states; the details (error text, latencies, sizing) need an admin when auth is on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import noa
from noa.build import gateway
from noa.build.gateway import GatewayParts, Placement
from noa.build.health import health_parts
from noa.config import parse_config
from noa.observability.dependencies import DependencyChecks
from noa.routing.health_center import HealthCenter
from noa.storage.db import LazyDatabase

KEY = "probe-master-key"
CONFIG = {
    "providers": {"openai": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
    "models": [
        {"id": "gpt", "provider": "openai", "upstream": "gpt-x"},
        {"id": "other", "provider": "openai", "upstream": "gpt-y"},
    ],
    "deployment": {"gateway": {"num_replicas": 2}},
}


@pytest.fixture
async def wired(tmp_path: Path) -> AsyncIterator[tuple[GatewayParts, HealthCenter]]:
    config = parse_config(CONFIG)
    env = {
        "OPENAI_API_KEY": "sk-up",
        "NOA_MASTER_KEY": KEY,
        "NOA_DATABASE_URL": f"sqlite:///{tmp_path}/noa.db",
    }
    center = HealthCenter(health_parts(config, {}, env))  # never started: nothing probed
    parts = gateway.gateway(config, Placement(local={}, health=center, replica="r1"), env)
    yield parts, center
    await parts.aclose()
    await center.aclose()


async def get(parts: GatewayParts, path: str, key: str | None = KEY) -> tuple[int, Any]:
    """GET ``path``, as an admin by default (probes need no key; their details do)."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    transport = httpx.ASGITransport(app=parts.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://noa") as client:
        response = await client.get(path, headers=headers)
    return response.status_code, response.json()


async def test_ready_when_every_model_has_a_provider_and_the_database_answers(
    wired: tuple[GatewayParts, HealthCenter],
) -> None:
    parts, _ = wired
    status, body = await get(parts, "/health/ready")
    assert status == 200 and body["status"] == "ready"
    assert body["models"] == {"gpt": "available", "other": "available"}
    assert body["dependencies"]["database"]["status"] == "ok"
    assert body["providers"]["openai"]["status"] == "unknown"  # not probed yet: still usable


async def test_not_ready_names_the_model_whose_only_route_is_open(
    wired: tuple[GatewayParts, HealthCenter],
) -> None:
    parts, center = wired
    await center.report("openai/gpt-x", "open", 30.0)  # another replica found it failing
    status, body = await get(parts, "/health/ready")
    assert status == 503 and body["status"] == "not_ready"
    assert body["models"] == {"gpt": "unavailable", "other": "available"}
    assert body["providers"]["openai"]["models"]["gpt-x"]["breaker"] == "open"


async def test_a_database_that_is_down_makes_the_replica_not_ready(
    wired: tuple[GatewayParts, HealthCenter],
) -> None:
    parts, _ = wired
    await parts.probes.dependencies.aclose()
    dead = LazyDatabase("postgresql://u@127.0.0.1:9/x")
    parts.probes.dependencies = DependencyChecks(dead, None, timeout_s=1)
    status, body = await get(parts, "/health/ready")
    assert status == 503 and body["status"] == "not_ready"
    assert body["models"] == {"gpt": "available", "other": "available"}
    assert body["dependencies"]["database"]["status"] == "down"


async def test_status_shows_the_deployment_models_and_shared_breakers(
    wired: tuple[GatewayParts, HealthCenter],
) -> None:
    parts, center = wired
    await center.report("openai/gpt-y", "open", 30.0)
    status, body = await get(parts, "/status")
    assert status == 200
    assert (body["version"], body["replica"]) == (noa.__version__, "r1")
    assert body["deployments"]["gateway"]["num_replicas"] == 2
    assert body["deployments"]["hot_path"] == "inline"
    assert set(body["models"]) >= {"gpt", "other"}
    assert body["breakers"]["openai/gpt-y"]["state"] == "open"
    assert set(body["providers"]) == {"openai"}
    assert body["dependencies"]["database"]["status"] == "ok"


async def test_providers_and_cache_probes(wired: tuple[GatewayParts, HealthCenter]) -> None:
    parts, center = wired
    status, providers = await get(parts, "/health/providers")
    assert status == 200 and providers == await center.snapshot()
    status, cache = await get(parts, "/health/cache")
    assert status == 200 and cache["enabled"] is True
    assert set(cache["tiers"]) == {"l1", "l3"}  # no Redis, no CacheActor here: no L2
    assert cache["answers"]["miss"] == 0


async def test_without_shared_health_the_probes_still_answer(tmp_path: Path) -> None:
    config = parse_config({**CONFIG, "cache": {"enabled": False}})
    env = {"OPENAI_API_KEY": "sk-up", "NOA_DATABASE_URL": f"sqlite:///{tmp_path}/noa.db"}
    parts = gateway.gateway(config, Placement(local={}), env)
    try:
        assert (await get(parts, "/health/ready", None))[0] == 200
        assert (await get(parts, "/health/cache", None))[1] == {"enabled": False}
        assert (await get(parts, "/health/providers", None))[1] == {}
    finally:
        await parts.aclose()


async def test_a_replica_hands_its_metrics_to_the_shared_board(
    wired: tuple[GatewayParts, HealthCenter],
) -> None:
    parts, center = wired
    parts.metrics["http_requests_total"].inc(("GET", "/v1/models", "200"), 3)
    assert parts.push is not None
    await parts.push.push()
    total = await center.metrics()
    assert total["http_requests_total"][("GET", "/v1/models", "200")] == 3
    assert total["noa_metrics_replicas"] == {(): 1.0}
    transport = httpx.ASGITransport(app=parts.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://noa") as client:
        scraped = (await client.get("/metrics")).text
    assert 'http_requests_total{method="GET",path="/v1/models",status="200"} 3.0' in scraped


DEAD_DATABASE = "postgresql://noa_admin@127.0.0.1:9/noa"


def _down_database(parts: GatewayParts) -> None:
    dead = LazyDatabase(DEAD_DATABASE)
    parts.probes.dependencies = DependencyChecks(dead, None, timeout_s=1)


async def test_without_an_admin_credential_the_probes_answer_states_only(
    wired: tuple[GatewayParts, HealthCenter],
) -> None:
    parts, center = wired
    await parts.probes.dependencies.aclose()
    _down_database(parts)
    await center.report("openai/gpt-x", "open", 30.0)
    status, ready = await get(parts, "/health/ready", None)
    assert status == 503  # the status code a load balancer reads is the same for everyone
    assert ready == {
        "status": "not_ready",
        "models": {"gpt": "unavailable", "other": "available"},
        "providers": {"openai": {"status": "unknown"}},
        "dependencies": {"database": {"status": "down"}},
        "bridges": {},
    }
    status, body = await get(parts, "/status", None)
    assert status == 200 and (body["version"], body["replica"]) == (noa.__version__, "r1")
    assert body["dependencies"] == {"database": {"status": "down"}}
    assert body["breakers"] == {"openai/gpt-x": {"state": "open"}}
    assert "deployments" not in body
    status, providers = await get(parts, "/health/providers", None)
    assert status == 200 and providers == {
        "providers": {"openai": {"status": "unknown"}},
        "breakers": {"openai/gpt-x": {"state": "open"}},
    }
    # what the error text would have told: the database's host and user
    _, admin_ready = await get(parts, "/health/ready")
    assert "127.0.0.1" in admin_ready["dependencies"]["database"]["error"]


async def test_an_upstream_error_reaches_admins_only(
    wired: tuple[GatewayParts, HealthCenter],
) -> None:
    parts, center = wired
    await center.check_now()  # the provider's probe fails: its upstream does not answer
    _, details = await get(parts, "/health/providers")
    assert details["providers"]["openai"]["status"] == "down"
    assert details["providers"]["openai"]["error"]
    for path in ("/health/providers", "/status", "/health/ready"):
        _, public = await get(parts, path, None)
        assert public["providers"] == {"openai": {"status": "down"}}, path
        assert "error" not in str(public) and "latency" not in str(public), path


async def test_an_admin_key_sees_the_details_other_keys_do_not(
    wired: tuple[GatewayParts, HealthCenter],
) -> None:
    parts, _ = wired
    admin, _ = await parts.access.keys.create(name="ops", scopes=["admin"])
    member, _ = await parts.access.keys.create(name="app")
    assert "deployments" in (await get(parts, "/status", admin))[1]
    for key in (member, "sk-noa-not-a-key", "wrong-master-key"):
        status, body = await get(parts, "/status", key)
        assert status == 200 and "deployments" not in body, key  # no 401: still a probe
        status, body = await get(parts, "/health/ready", key)
        assert status == 200 and "latency_ms" not in body["dependencies"]["database"], key
