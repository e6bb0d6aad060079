"""schemathesis over every route of NOA's own ``openapi.json``: no input is answered with a 5xx
or left hanging, and what the fuzzer stored leaves the API working.

A whole Gateway (keys, limits and the cache on the suite's Redis, usage, probes, metrics, the
dashboard, the job, schedule, file and batch APIs with a runner executing what is submitted)
is served on loopback in front of the fake upstream, with a master key, over SQLite and over
PostgreSQL. The first run is the audit's command (``-c not_a_server_error --phases
examples,coverage,fuzzing``) over every route; the second sends valid bodies only (``--mode
positive``) to the inference routes, so that fuzzed requests go all the way through admission,
the cache, routing and the translation to each provider. Both are seeded; the first is
bounded by ``--max-time``, the second by a count of examples (the same requests on any
machine, so that what they reach does not depend on its speed); ``fuzz_hooks`` gives bodies
the names of served models.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from databases import fresh_database_url

from noa.build import gateway
from noa.build import jobs as jobs_build
from noa.build.gateway import GatewayParts, Placement
from noa.build.health import health_parts
from noa.config import parse_config
from noa.jobs.webhook_signing import WebhookSecret
from noa.routing.health_center import HealthCenter
from noa.testing.fake_upstream import FakeUpstream
from noa.testing.server import ServerThread

MASTER = "sk-fuzz-master"
REDIS_DB = 9
MODELS = ("gpt", "claude", "embed")
ALL_ROUTES_S = 90
INFERENCE_EXAMPLES = 100  # a count, not a time: which requests are sent must not hang on speed
INFERENCE = "^/(v1/(chat/)?completions|v1/embeddings|api/v1/inference/)"
SUPPORT = Path(__file__).parents[1] / "support"
CONFIG = {
    "routing": {"retries": 0},
    "providers": {
        "openai": {"kind": "openai", "max_retries": 0},
        "anthropic": {"kind": "anthropic", "max_retries": 0},
    },
    "models": [
        {"id": "gpt", "provider": "openai", "upstream": "gpt-4o-mini", "price": {"input": 1.0}},
        {"id": "claude", "provider": "anthropic", "upstream": "claude-3-5-haiku-latest"},
        {"id": "embed", "provider": "openai", "upstream": "text-embedding-3-small"},
    ],
    "usage": {"flush_interval_s": 1},
}


def own_redis_db() -> str:
    """A Redis database of this module's own, emptied: the runs are seeded, so answers another
    run cached (the same requests) would be hits here and never reach the upstream."""
    url = os.environ["NOA_TEST_REDIS_URL"].rsplit("/", 1)[0] + f"/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


class Later:
    """An ASGI app set once the server's loop is running (the Gateway is built on it)."""

    app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


@dataclass
class Served:
    url: str
    fake: FakeUpstream


@pytest.fixture(params=["sqlite", "postgres"])
def noa(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    upstream_env: dict[str, str],
    fake: FakeUpstream,
) -> Iterator[Served]:
    database = f"sqlite:///{tmp_path}/noa.db" if request.param == "sqlite" else fresh_database_url()
    env = upstream_env | {
        "NOA_MASTER_KEY": MASTER,
        "NOA_DATABASE_URL": database,
        "NOA_REDIS_URL": own_redis_db(),
        "NOA_WEBHOOK_SECRET": str(WebhookSecret.generate()),  # callback_url is accepted
    }
    config = parse_config(CONFIG)
    later = Later()
    server = ServerThread(later).start()

    async def build() -> tuple[GatewayParts, HealthCenter, jobs_build.JobParts]:
        center = HealthCenter(health_parts(config, {}, env))
        placement = Placement(local={}, health=center, replica="r1")
        parts = gateway.gateway(config, placement, env)
        runner = jobs_build.runner(parts, owner="fuzz-runner", environ=env)
        parts.jobs = jobs_build.api(parts, notify=runner.notify, environ=env)
        runner.start()
        return parts, center, runner

    parts, center, runner = server.run(build())
    later.app = parts.app()
    yield Served(server.base_url, fake)
    server.run(runner.aclose())
    server.run(parts.aclose())
    server.run(center.aclose())
    server.stop()


def schemathesis(url: str, report: Path, *options: str, timeout_s: float = 600) -> str:
    """Run schemathesis against ``url``; its output, once it has passed."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {MASTER}",
        "--checks",
        "not_a_server_error",
        "--phases",
        "examples,coverage,fuzzing",
        "--seed",
        "14",
        "--request-timeout",
        "30",  # an answer that never comes is a failure, not a wait
        "--report",
        "junit",
        "--report-dir",
        str(report),
        "--no-color",
        *options,
    ]
    env = os.environ | {
        "SCHEMATHESIS_HOOKS": "fuzz_hooks",
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
        "NOA_FUZZ_MODELS": ",".join(MODELS),
        "NOA_FUZZ_ANTHROPIC_MODELS": "claude",
    }
    run = subprocess.run(
        command, env=env, cwd=report.parent, capture_output=True, text=True, timeout=timeout_s
    )
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-4000:]
    assert "test cases:" in run.stdout.lower()
    return run.stdout


def test_no_fuzzed_request_to_any_route_gets_a_server_error(noa: Served, tmp_path: Path) -> None:
    schemathesis(noa.url, tmp_path / "report", "--max-time", str(ALL_ROUTES_S))
    still_working(noa)


def test_fuzzed_valid_requests_reach_every_provider_without_a_server_error(
    noa: Served, tmp_path: Path
) -> None:
    schemathesis(
        noa.url, tmp_path / "report", "--mode", "positive", "--include-path-regex", INFERENCE,
        "--max-examples", str(INFERENCE_EXAMPLES), "--workers", "1",
    )  # fmt: skip
    # past validation, admission and routing, to both upstreams
    reached = set(noa.fake.paths())
    assert {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"} <= reached
    assert "/v1/messages" in reached
    still_working(noa)


def still_working(noa: Served) -> None:
    """Whatever the fuzzer stored on the way, the API still answers."""
    auth = {"authorization": f"Bearer {MASTER}"}
    with httpx.Client(base_url=noa.url, headers=auth, timeout=30) as http:
        for path in (
            "/v1/admin/keys", "/v1/admin/teams", "/v1/admin/usage", "/v1/models", "/v1/jobs",
            "/v1/admin/jobs", "/v1/admin/schedules", "/v1/files", "/v1/batches",
        ):  # fmt: skip
            assert http.get(path).status_code == 200, path
        chat = {"model": "gpt", "messages": [{"role": "user", "content": "still there?"}]}
        assert http.post("/v1/chat/completions", json=chat).status_code == 200
        job = http.post("/v1/jobs", json={"endpoint": "/v1/chat/completions", "body": chat})
        assert job.status_code == 202, job.text
        done = http.get(f"/v1/jobs/{job.json()['id']}", params={"wait": 20}).json()
        assert done["status"] == "completed", done
