"""NOA's HTTP API served for real (uvicorn on loopback, no Ray), driven by the official SDK.

Cloud providers point at the fake upstream; llama.cpp runs in-process with a tiny GGUF.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openapi import validate

from noa.build import gateway
from noa.config import parse_config
from noa.http.app import create_app
from noa.testing.fake_upstream import FakeUpstream, Step
from noa.testing.server import ServerThread

KEY = "noa-test-master-key"
LIMIT = 64 * 1024
MSG = [{"role": "user", "content": "hello world"}]


@pytest.fixture(scope="module")
def noa_url(tiny_gguf: Path, upstream_env: dict[str, str]) -> Iterator[str]:
    config = parse_config(
        {
            "server": {"max_body_bytes": LIMIT},
            "routing": {"retries": 0},  # these tests look at single upstream failures
            "providers": {
                "openai": {"kind": "openai", "max_retries": 0},
                "anthropic": {"kind": "anthropic", "max_retries": 0},
                "local": {"kind": "llamacpp", "models": {"tiny": str(tiny_gguf)}, "n_ctx": 512},
            },
        }
    )
    service = gateway.inprocess_service(config, upstream_env)
    server = ServerThread(create_app(service, master_key=KEY, max_body_bytes=LIMIT)).start()
    yield server.base_url
    server.stop()


@pytest.fixture(scope="module")
def client(noa_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{noa_url}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def http(noa_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=noa_url, headers={"authorization": f"Bearer {KEY}"}) as c:
        yield c


def test_chat_json_with_route_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="local/tiny",
        messages=MSG,
        max_tokens=4,
        seed=1,
        extra_headers={"x-noa-cache": "refresh"},  # upstream, even if cached before
    )
    body = raw.http_response.json()
    validate("CreateChatCompletionResponse", body)
    assert body["model"] == "local/tiny"
    assert raw.headers["x-noa-provider"] == "local"
    assert raw.headers["x-noa-model"] == "local/tiny"
    assert raw.headers["x-noa-attempts"] == "1"
    assert raw.headers["x-noa-cache"] == "miss"
    assert raw.headers["x-correlation-id"]
    assert raw.parse().usage.completion_tokens >= 4


def test_chat_stream_chunks_usage_and_done(client: openai.OpenAI, http: httpx.Client) -> None:
    chunks = list(
        client.chat.completions.create(
            model="local/tiny",
            messages=MSG,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishing[0].choices[0].finish_reason == "length"
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "local/tiny",
            "messages": MSG,
            "max_tokens": 3,
            "stream": True,
        },
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    import json

    for event in events[:-1]:
        chunk = json.loads(event.removeprefix("data: "))
        validate("CreateChatCompletionStreamResponse", chunk)
        assert chunk["choices"], "no usage chunk unless include_usage was asked for"


def test_completions_json_and_stream(client: openai.OpenAI) -> None:
    body = client.completions.with_raw_response.create(
        model="local/tiny", prompt="the cat", max_tokens=3
    ).http_response.json()
    validate("CreateCompletionResponse", body)
    parts = list(
        client.completions.create(model="local/tiny", prompt="a", max_tokens=3, stream=True)
    )
    assert parts[-1].choices[0].finish_reason == "length"


def test_embeddings_float_and_sdk_default(client: openai.OpenAI, http: httpx.Client) -> None:
    body = http.post("/v1/embeddings", json={"model": "local/tiny", "input": ["a", "b"]}).json()
    validate("CreateEmbeddingResponse", body)
    result = client.embeddings.create(model="local/tiny", input="the cat")  # SDK asks base64
    assert len(result.data[0].embedding) == 32
    assert result.data[0].embedding == pytest.approx(
        http.post("/v1/embeddings", json={"model": "local/tiny", "input": "the cat"}).json()[
            "data"
        ][0]["embedding"],
        abs=1e-6,
    )


def test_models_list_and_retrieve(client: openai.OpenAI, http: httpx.Client) -> None:
    listing = http.get("/v1/models").json()
    validate("ListModelsResponse", listing)
    ids = [m.id for m in client.models.list()]
    assert "local/smollm2-135m-instruct" in ids and "local/tiny" in ids
    model = client.models.retrieve("local/smollm2-135m-instruct")
    assert model.id == "local/smollm2-135m-instruct" and model.owned_by == "HuggingFaceTB"
    validate("Model", http.get("/v1/models/smollm2").json())
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_openai_and_anthropic_prefixes_reach_their_upstreams(
    client: openai.OpenAI, fake: FakeUpstream
) -> None:
    answer = client.chat.completions.create(model="openai/gpt-fake", messages=MSG)
    assert answer.choices[0].message.content == "echo: hello world"
    assert fake.requests[-1].path == "/v1/chat/completions"
    assert fake.requests[-1].body["model"] == "gpt-fake"
    answer = client.chat.completions.create(
        model="anthropic/claude-fake", messages=MSG, temperature=0.5
    )
    assert answer.choices[0].message.content == "echo: hello world"
    assert fake.requests[-1].path == "/v1/messages"
    assert fake.requests[-1].body["model"] == "claude-fake"
    stream = client.chat.completions.create(
        model="anthropic/claude-fake", messages=MSG, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
        "echo: hello world"
    )


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    validate("ErrorResponse", body)
    assert body["error"]["correlation_id"] == response.headers["x-correlation-id"]
    return body["error"]


def test_client_errors(client: openai.OpenAI, http: httpx.Client, noa_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="no-such-model", messages=MSG)
    assert nf.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="local/tiny", messages=MSG, temperature=5)
    assert bad.value.body["param"] == "temperature"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{noa_url}/v1", api_key="wrong", max_retries=0).models.list()
    error = _error(httpx.get(f"{noa_url}/v1/models"), 401)
    assert error["type"] == "authentication_error" and error["category"] == "client"
    error = _error(
        http.post(
            "/v1/chat/completions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        ),
        400,
    )
    assert error["code"] == "invalid_json"
    error = _error(http.post("/v1/chat/completions", json={"model": "m"}), 400)
    assert error["param"] == "messages"
    _error(http.put("/v1/chat/completions", json={}), 405)
    _error(http.get("/v1/nowhere"), 404)
    big = {"model": "local/tiny", "messages": [{"role": "user", "content": "x" * LIMIT}]}
    error = _error(http.post("/v1/chat/completions", json=big), 413)
    assert error["code"] == "request_too_large"
    error = _error(http.post("/v1/embeddings", json={"model": "anthropic/c", "input": "x"}), 400)
    assert "does not support embeddings" in error["message"]


def test_a_body_nested_too_deep_is_a_400_before_any_work(
    http: httpx.Client, fake: FakeUpstream
) -> None:
    def nested(depth: int) -> object:
        value: object = 1
        for _ in range(depth):
            value = [value]
        return value

    bodies = {
        "/v1/chat/completions": {"messages": MSG},
        "/api/v1/inference/chat": {"messages": MSG},
        "/v1/completions": {"prompt": "x"},
        "/v1/embeddings": {"input": "x"},
        "/api/v1/inference/embeddings": {"input": "x"},
    }
    for path, body in bodies.items():
        fine = http.post(path, json={"model": "openai/gpt-fake", **body, "x": nested(63)})
        assert fine.status_code == 200, fine.text
        sent = len(fake.requests)
        for depth in (64, 300):
            deep = {"model": "openai/gpt-fake", **body, "x": nested(depth)}
            error = _error(http.post(path, json=deep), 400)
            assert error["type"] == "invalid_request_error"
            assert error["code"] == "json_too_deep"
            assert "more than 64 levels deep" in error["message"]
        assert len(fake.requests) == sent


def test_chunked_oversized_body_is_refused(http: httpx.Client) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"model": "local/tiny", "messages": [{"role": "user", "content": "'
        for _ in range(LIMIT // 1024 + 1):
            yield b"x" * 1024
        yield b'"}]}'

    _error(
        http.post(
            "/v1/chat/completions", content=body(), headers={"content-type": "application/json"}
        ),
        413,
    )


def test_upstream_failures_are_external_errors(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.script.append(Step(status=500))
    error = _error(
        http.post("/v1/chat/completions", json={"model": "openai/gpt", "messages": MSG}), 502
    )
    assert error["category"] == "external" and error["type"] == "upstream_error"
    fake.script.append(Step(status=401))
    error = _error(
        http.post("/v1/chat/completions", json={"model": "openai/gpt", "messages": MSG}), 502
    )
    assert "rejected NOA's credentials" in error["message"]
    fake.script.append(
        Step(status=400, body={"error": {"message": "bad thing", "type": "invalid_request_error"}})
    )
    error = _error(
        http.post("/v1/chat/completions", json={"model": "openai/gpt", "messages": MSG}), 400
    )
    assert error["message"] == "bad thing"


def test_failure_before_first_chunk_is_a_plain_error(
    http: httpx.Client, fake: FakeUpstream
) -> None:
    fake.script.append(Step(status=503))
    response = http.post(
        "/v1/chat/completions", json={"model": "openai/gpt", "messages": MSG, "stream": True}
    )
    _error(response, 502)


def test_failure_mid_stream_ends_with_an_error_event(
    client: openai.OpenAI, fake: FakeUpstream
) -> None:
    fake.script.append(Step(cut_after=3))
    stream = client.chat.completions.create(model="openai/gpt", messages=MSG, stream=True)
    with pytest.raises(openai.APIError, match="without \\[DONE\\]"):
        for _ in stream:
            pass


def test_chunks_are_forwarded_as_they_arrive(http: httpx.Client, fake: FakeUpstream) -> None:
    gate = threading.Event()
    fake.script.append(Step(gate=gate))
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "openai/gpt",
            "messages": MSG,
            "stream": True,
        },
        timeout=20,
    ) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line)
        assert '"role":"assistant"' in first  # arrived while the upstream is still held
        gate.set()
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]"


def test_correlation_ids_are_echoed(http: httpx.Client) -> None:
    response = http.get("/v1/models", headers={"x-correlation-id": "abc-123"})
    assert response.headers["x-correlation-id"] == "abc-123"
    error = _error(
        http.post(
            "/v1/chat/completions",
            json={"model": "x", "messages": MSG},
            headers={"x-correlation-id": "req-9"},
        ),
        404,
    )
    assert error["correlation_id"] == "req-9"


def test_seed_paths_are_aliases(http: httpx.Client) -> None:
    chat = http.post(
        "/api/v1/inference/chat", json={"model": "local/tiny", "messages": MSG, "max_tokens": 2}
    ).json()
    validate("CreateChatCompletionResponse", chat)
    emb = http.post("/api/v1/inference/embeddings", json={"model": "local/tiny", "input": "a"})
    validate("CreateEmbeddingResponse", emb.json())
    assert http.get("/api/v1/models").json()["object"] == "list"
    assert http.get("/api/v1/models/local/tiny").json()["id"] == "local/tiny"
    assert http.post("/api/v1/inference/chat", json={}).status_code == 400


def test_docs_and_health_need_no_key(noa_url: str) -> None:
    assert httpx.get(f"{noa_url}/health").json() == {"status": "ok"}
    spec = httpx.get(f"{noa_url}/openapi.json").json()
    assert "/v1/chat/completions" in spec["paths"] and "/api/v1/inference/chat" in spec["paths"]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for page in ("/docs", "/api-docs"):
        html = httpx.get(f"{noa_url}{page}").text
        assert "swagger-ui-bundle.js" in html and "cdn.jsdelivr" not in html
    asset = httpx.get(f"{noa_url}/_noa/docs-assets/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.content) > 100_000
