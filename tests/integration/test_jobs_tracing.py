"""A span per job run (the SDK's in-memory exporter): a job's run is a child of the request that
submitted it, in that request's trace, with the route and provider spans under it; a batch's
lines link to the batch's request instead; a job's usage record carries the job's id."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from noa.build import gateway
from noa.build import jobs as jobs_build
from noa.config import parse_config
from noa.observability.tracing import Tracing
from noa.testing.fake_upstream import FakeUpstream
from noa.testing.server import ServerThread

MASTER = "sk-master-jobs-tracing"
CHAT = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}


def wait(client: httpx.Client, path: str, final: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        got: dict[str, Any] = client.get(path).json()
        if got["status"] in final or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def test_a_job_run_joins_the_submitting_request_trace_and_batch_lines_link_to_theirs(
    upstream_env: dict[str, str], fake: FakeUpstream, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    env = upstream_env | {
        "NOA_MASTER_KEY": MASTER,
        "NOA_DATABASE_URL": f"sqlite:///{tmp_path}/noa.db",
    }
    config = parse_config(
        {
            "routing": {"retries": 0},
            "providers": {"openai": {"kind": "openai", "max_retries": 0}},
            "models": [{"id": "gpt", "provider": "openai", "upstream": "gpt-4o-mini"}],
            "jobs": {"poll_s": 0.05},
        }
    )
    parts = gateway.inprocess(config, env, tracing=Tracing(provider))
    runner = jobs_build.runner(parts, owner="tracing-runner", environ=env)
    parts.jobs = jobs_build.api(parts, notify=runner.notify, environ=env)
    server = ServerThread(parts.app()).start()

    async def start() -> None:
        runner.start()

    server.run(start())
    auth = {"authorization": f"Bearer {MASTER}"}
    lines = "".join(
        json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": CHAT}) + "\n"
        for i in range(2)
    )  # fmt: skip
    try:
        with httpx.Client(base_url=server.base_url, headers=auth, timeout=30) as client:
            posted = client.post(
                "/v1/jobs", json={"endpoint": "/v1/chat/completions", "body": CHAT}
            )
            assert posted.status_code == 202, posted.text
            job = wait(client, f"/v1/jobs/{posted.json()['id']}", {"completed", "failed", "dead"})
            assert job["status"] == "completed", job
            upload = client.post(
                "/v1/files",
                data={"purpose": "batch"},
                files={"file": ("in.jsonl", lines.encode(), "application/jsonl")},
            )
            assert upload.status_code == 200, upload.text
            created = client.post(
                "/v1/batches",
                json={
                    "input_file_id": upload.json()["id"],
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                },
            )
            assert created.status_code == 200, created.text
            batch = wait(client, f"/v1/batches/{created.json()['id']}", {"completed", "failed"})
            assert batch["status"] == "completed", batch
        server.run(parts.access.usage.flush())
        usage = server.run(parts.db.fetch("SELECT correlation_id FROM noa_usage"))
    finally:
        server.run(runner.aclose())
        server.run(parts.aclose())
        server.stop()

    spans = exporter.get_finished_spans()
    runs = [s for s in spans if s.name == "job /v1/chat/completions"]
    assert len(runs) == 3 and all(s.kind == SpanKind.CONSUMER for s in runs)

    submit = next(s for s in spans if s.name == "POST /v1/jobs")
    (one,) = [s for s in runs if s.attributes and s.attributes["noa.job.id"] == job["id"]]
    assert trace_id(one) == trace_id(submit) == posted.headers["x-correlation-id"]
    assert one.parent is not None and submit.context is not None
    assert one.parent.span_id == submit.context.span_id
    assert one.attributes is not None and one.attributes["noa.job.attempt"] == 1
    route = next(s for s in spans if s.name == "noa.route" and trace_id(s) == trace_id(one))
    assert route.parent is not None and one.context is not None
    assert route.parent.span_id == one.context.span_id
    assert any(s.name == "noa.provider" and trace_id(s) == trace_id(one) for s in spans)

    create = next(s for s in spans if s.name == "POST /v1/batches")
    assert create.context is not None
    lines_runs = [s for s in runs if s is not one]
    for run in lines_runs:
        assert run.attributes is not None and run.attributes["noa.batch.id"] == batch["id"]
        assert run.parent is None and trace_id(run) != trace_id(create)  # its own trace...
        assert [link.context.span_id for link in run.links] == [create.context.span_id]

    # each job's usage record carries the job's id as its correlation id
    assert job["id"] in {r["correlation_id"] for r in usage}
