"""Jobs and batches on the Serve app (``serve deploy``): submitted to a Gateway replica, run by the
JobRunner deployment through the Router on the local model, read back over HTTP; the official
``openai`` client's files + batches workflow, with an invalid line in the error file."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from deployments.serve_cluster import ServeCluster

pytestmark = pytest.mark.e2e

SYSTEM = {"role": "system", "content": "You are a helpful AI assistant."}
QUESTION = {"role": "user", "content": "What is the capital of France?"}
LOCAL = {"model": "smollm2", "messages": [SYSTEM, QUESTION], "max_tokens": 30, "temperature": 0}
FINAL = {"completed", "failed", "dead", "cancelled", "expired"}


def _wait(read: Any, timeout_s: float = 240.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        current = read()
        status = current["status"] if isinstance(current, dict) else current.status
        if status in FINAL or time.monotonic() > deadline:
            return current
        time.sleep(0.2)


def test_a_job_runs_on_the_local_model(cluster: ServeCluster) -> None:
    headers = {"authorization": f"Bearer {cluster.master_key}"}
    submitted = httpx.post(
        f"{cluster.url}/v1/jobs",
        headers=headers,
        json={"endpoint": "/v1/chat/completions", "body": LOCAL, "priority": "high"},
        timeout=30,
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    done = _wait(
        lambda: httpx.get(f"{cluster.url}/v1/jobs/{job_id}", headers=headers, timeout=30).json()
    )
    assert done["status"] == "completed", done
    assert "Paris" in done["result"]["choices"][0]["message"]["content"]
    assert done["result"]["model"] == "local/smollm2-135m-instruct"


def test_the_openai_clients_batch_workflow(client: openai.OpenAI) -> None:
    lines = [
        json.dumps(
            {"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions", "body": LOCAL}
        )
        for i in range(3)
    ]
    lines.insert(1, '{"custom_id": "broken", "method": "POST", "url": "/v1/chat/completions"')
    uploaded = client.files.create(
        file=("questions.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch"
    )
    assert uploaded.purpose == "batch" and uploaded.bytes > 0
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "e2e"},
    )
    assert batch.status in ("validating", "in_progress")
    done = _wait(lambda: client.batches.retrieve(batch.id))
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (4, 3)
    assert done.request_counts.failed == 1 and done.metadata == {"run": "e2e"}
    assert done.output_file_id and done.error_file_id
    output = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in output) == ["q0", "q1", "q2"]
    for line in output:
        assert line["response"]["status_code"] == 200 and line["error"] is None
        assert "Paris" in line["response"]["body"]["choices"][0]["message"]["content"]
    errors = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert len(errors) == 1 and errors[0]["error"]["code"], errors
    assert errors[0]["error"]["line"] == 2 and errors[0]["custom_id"] is None, errors
    listed = client.batches.list(limit=5)
    assert batch.id in [b.id for b in listed.data]
