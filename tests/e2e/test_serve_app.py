"""NOA deployed with ``serve deploy serve_config.yaml`` on a local cluster, used as people will:
the official ``openai`` client over HTTP, and another Ray driver through the app handle."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from openapi import validate

from deployments.serve_cluster import ServeCluster
from noa.testing.fake_upstream import FakeUpstream

pytestmark = pytest.mark.e2e

SYSTEM = {"role": "system", "content": "You are a helpful AI assistant."}
QUESTION = {"role": "user", "content": "What is the capital of France?"}
DRIVER = Path(__file__).with_name("driver.py")


def test_chat_with_the_local_model(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=[SYSTEM, QUESTION], max_tokens=40, temperature=0
    )
    body = raw.http_response.json()
    validate("CreateChatCompletionResponse", body)
    assert "Paris" in body["choices"][0]["message"]["content"]
    assert body["model"] == "local/smollm2-135m-instruct"
    assert raw.headers["x-noa-provider"] == "local"
    assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] > 0


def test_streamed_chat_with_usage(client: openai.OpenAI, cluster: ServeCluster) -> None:
    chunks = list(
        client.chat.completions.create(
            model="local/smollm2-135m-instruct",
            messages=[SYSTEM, QUESTION],
            max_tokens=40,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    with httpx.stream(
        "POST",
        f"{cluster.url}/v1/chat/completions",
        timeout=60,
        headers={"authorization": f"Bearer {cluster.master_key}"},
        json={"model": "smollm2", "messages": [QUESTION], "max_tokens": 5, "stream": True},
    ) as response:
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    for event in events[:-1]:
        validate("CreateChatCompletionStreamResponse", json.loads(event[len("data: ") :]))


def test_completions(client: openai.OpenAI) -> None:
    body = client.completions.with_raw_response.create(
        model="smollm2", prompt="The capital of France is", max_tokens=8, temperature=0
    ).http_response.json()
    validate("CreateCompletionResponse", body)
    assert body["choices"][0]["text"]


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


def test_embeddings_put_similar_texts_closer(client: openai.OpenAI) -> None:
    result = client.embeddings.create(
        model="smollm2",
        input=[
            "The cat sat on the mat.",
            "A kitten is sitting on a rug.",
            "Quarterly revenue grew by 12 percent.",
        ],
    )
    cat, kitten, revenue = (d.embedding for d in result.data)
    assert len(cat) > 0
    assert _cos(cat, kitten) > _cos(cat, revenue)


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    assert "local/smollm2-135m-instruct" in [m.id for m in client.models.list()]
    assert client.models.retrieve("local/smollm2-135m-instruct").owned_by == "HuggingFaceTB"


def test_errors_through_the_sdk(client: openai.OpenAI, cluster: ServeCluster) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[QUESTION])
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="smollm2", messages=[{"role": "robot", "content": "x"}]
        )
    assert bad.value.body["param"] == "messages.0.role"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="wrong", max_retries=0).models.list()


def test_cloud_prefixes_reach_the_configured_upstreams(
    client: openai.OpenAI, fake: FakeUpstream
) -> None:
    answer = client.chat.completions.create(model="openai/gpt-e2e", messages=[QUESTION])
    assert answer.choices[0].message.content == "echo: What is the capital of France?"
    assert fake.requests[-1].body["model"] == "gpt-e2e"
    answer = client.chat.completions.create(model="anthropic/claude-e2e", messages=[QUESTION])
    assert answer.choices[0].message.content == "echo: What is the capital of France?"
    assert fake.requests[-1].path == "/v1/messages"


def test_another_ray_driver_uses_the_app_handle(cluster: ServeCluster) -> None:
    result = subprocess.run(
        [sys.executable, str(DRIVER)],
        env=cluster.driver_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    validate("CreateChatCompletionResponse", report["chat"])
    assert "Paris" in report["chat"]["choices"][0]["message"]["content"]
    assert "Paris" in report["streamed_text"]
    assert report["stream_usage"]["completion_tokens"] > 0
    assert report["job"]["length"] == report["embedding_length"]  # a job, run on the cluster
    # what x-noa-* headers say over HTTP, handle callers get in the `noa` field
    assert report["chat"]["noa"]["provider"] == "local"
    assert report["chat"]["noa"]["attempts"] == 1
    assert report["chat"]["noa"]["cache"] == "miss"
    assert report["again"]["noa"]["cache"] in ("hit-l1", "hit-l2")
    assert report["again"]["choices"] == report["chat"]["choices"]
    assert report["stream_noa"]["model"] == "local/smollm2-135m-instruct"
    assert report["models"][0] == "local/smollm2-135m-instruct"
    assert report["embedding_length"] > 0
    assert report["not_found"] == {"status": 404, "is_model_not_found": True}
