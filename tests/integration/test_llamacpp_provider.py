"""The llama.cpp provider with real GGUF files: a tiny generated one, and the bundled SmolLM2."""

import asyncio
import base64
import json
import math
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from openapi import validate

from noa.errors import InvalidRequestError, ModelNotFoundError, UpstreamError
from noa.providers.llamacpp.models import LlamaSettings, LruModelStore, ModelCatalog
from noa.providers.llamacpp.process import LlamaProcess
from noa.providers.llamacpp.provider import LlamaCppProvider
from noa.wire.operations import Operation

MSG = [{"role": "user", "content": "hello world"}]


def make_provider(models: dict[str, Path], capacity: int = 4) -> LlamaCppProvider:
    worker = LlamaProcess(LlamaSettings(n_ctx=512, n_threads=2))
    return LlamaCppProvider("local", LruModelStore(ModelCatalog(models), worker, capacity), worker)


@pytest.fixture(scope="module")
async def tiny(tiny_gguf: Path) -> AsyncIterator[LlamaCppProvider]:
    provider = make_provider({"tiny": tiny_gguf})
    yield provider
    await provider.aclose()


async def test_chat_json_is_openai_shaped(tiny: LlamaCppProvider) -> None:
    body = await tiny.call(Operation.CHAT, {"messages": MSG, "max_tokens": 5, "seed": 1}, "tiny")
    validate("CreateChatCompletionResponse", body)
    assert body["model"] == "tiny"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] >= 5


async def test_stream_usage_matches_the_blocking_call(tiny: LlamaCppProvider) -> None:
    request = {"messages": MSG, "max_tokens": 6, "temperature": 0, "seed": 3}
    blocking = await tiny.call(Operation.CHAT, request, "tiny")
    chunks = [c async for c in tiny.stream(Operation.CHAT, {**request, "stream": True}, "tiny")]
    for c in chunks:
        validate("CreateChatCompletionStreamResponse", c)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == blocking["choices"][0]["message"]["content"]
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert usage["prompt_tokens"] == blocking["usage"]["prompt_tokens"]
    assert usage["completion_tokens"] == 6


async def test_completions_one_and_many_prompts(tiny: LlamaCppProvider) -> None:
    body = await tiny.call(
        Operation.COMPLETIONS, {"prompt": ["the cat", "a dog"], "max_tokens": 3}, "tiny"
    )
    validate("CreateCompletionResponse", body)
    assert [c["index"] for c in body["choices"]] == [0, 1]
    chunks = [
        c
        async for c in tiny.stream(
            Operation.COMPLETIONS, {"prompt": "the", "max_tokens": 4}, "tiny"
        )
    ]
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    with pytest.raises(InvalidRequestError, match="one prompt"):
        async for _ in tiny.stream(Operation.COMPLETIONS, {"prompt": ["a", "b"]}, "tiny"):
            pass


async def test_embeddings_are_unit_vectors_in_float_or_base64(tiny: LlamaCppProvider) -> None:
    body = await tiny.call(Operation.EMBEDDINGS, {"input": ["hello", "the cat"]}, "tiny")
    validate("CreateEmbeddingResponse", body)
    vector = body["data"][1]["embedding"]
    assert len(vector) == 32 and math.isclose(
        math.sqrt(sum(v * v for v in vector)), 1, rel_tol=1e-4
    )
    assert body["usage"]["prompt_tokens"] > 0
    packed = await tiny.call(
        Operation.EMBEDDINGS, {"input": "the cat", "encoding_format": "base64"}, "tiny"
    )
    decoded = struct.unpack("<32f", base64.b64decode(packed["data"][0]["embedding"]))
    assert decoded == pytest.approx(vector, abs=1e-4)  # batched vs single: float noise
    with pytest.raises(InvalidRequestError, match="32-dimensional"):
        await tiny.call(Operation.EMBEDDINGS, {"input": "x", "dimensions": 8}, "tiny")
    with pytest.raises(InvalidRequestError, match="token ids"):
        await tiny.call(Operation.EMBEDDINGS, {"input": [1, 2, 3]}, "tiny")


async def test_bad_requests_and_unknown_models(tiny: LlamaCppProvider) -> None:
    with pytest.raises(ModelNotFoundError):
        await tiny.call(Operation.CHAT, {"messages": MSG}, "missing")
    with pytest.raises(InvalidRequestError, match="n must be 1"):
        await tiny.call(Operation.CHAT, {"messages": MSG, "n": 2}, "tiny")
    with pytest.raises(InvalidRequestError, match="not supported by local models"):
        await tiny.call(
            Operation.CHAT,
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:x"}}],
                    }
                ]
            },
            "tiny",
        )
    with pytest.raises(InvalidRequestError, match="logit_bias"):
        await tiny.call(Operation.CHAT, {"messages": MSG, "logit_bias": {"x": 1}}, "tiny")


async def test_lru_keeps_at_most_n_models(tiny_gguf: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.gguf"
    other.write_bytes(tiny_gguf.read_bytes())
    provider = make_provider({"a": tiny_gguf, "b": other}, capacity=1)
    store = provider._store
    await provider.call(Operation.CHAT, {"messages": MSG, "max_tokens": 1}, "a")
    await provider.call(Operation.CHAT, {"messages": MSG, "max_tokens": 1}, "b")
    assert store.loaded() == ["b"]
    await provider.call(Operation.EMBEDDINGS, {"input": "x"}, "b")
    assert store.loaded() == ["b::embedding"]


async def test_models_dir_resolution_stays_inside_the_directory(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "mini.gguf").write_bytes(tiny_gguf.read_bytes())
    catalog = ModelCatalog({}, models)
    assert catalog.resolve("mini") == (models / "mini.gguf").resolve()
    assert catalog.names() == ["mini"]
    for bad in ("../mini", "/etc/passwd", "mini/../../x", ""):
        with pytest.raises(ModelNotFoundError):
            catalog.resolve(bad)


async def test_closing_a_stream_stops_generation(tiny: LlamaCppProvider) -> None:
    stream = tiny.stream(
        Operation.CHAT, {"messages": MSG, "max_tokens": 400, "stream": True}, "tiny"
    )
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 3:
            break
    await stream.aclose()
    # The worker stops at its next token: a following request gets the thread promptly.
    body = await asyncio.wait_for(
        tiny.call(Operation.CHAT, {"messages": MSG, "max_tokens": 1}, "tiny"), 5
    )
    assert body["choices"]


async def test_smollm2_answers_coherently(smollm2: Path) -> None:
    provider = make_provider({"smollm2": smollm2})
    body = await provider.call(
        Operation.CHAT,
        {
            "messages": [
                {"role": "system", "content": "You are a helpful AI assistant."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            "max_tokens": 40,
            "temperature": 0,
        },
        "smollm2",
    )
    assert "Paris" in body["choices"][0]["message"]["content"]
    await provider.aclose()


async def test_json_schema_output_is_grammar_constrained(smollm2: Path) -> None:
    provider = make_provider({"smollm2": smollm2})
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Lyon"]}},
        "required": ["city"],
    }
    body = await provider.call(
        Operation.CHAT,
        {
            "messages": [{"role": "user", "content": "Capital of France, as JSON?"}],
            "max_tokens": 40,
            "temperature": 0,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "c", "schema": schema},
            },
        },
        "smollm2",
    )
    assert json.loads(body["choices"][0]["message"]["content"])["city"] in ("Paris", "Lyon")
    with pytest.raises(InvalidRequestError, match="response_format"):
        await provider.call(
            Operation.CHAT, {"messages": MSG, "response_format": {"type": "xml"}}, "smollm2"
        )
    await provider.aclose()


async def test_a_crashed_worker_fails_its_requests_and_is_replaced(tiny_gguf: Path) -> None:
    provider = make_provider({"tiny": tiny_gguf})
    stream = provider.stream(
        Operation.CHAT, {"messages": MSG, "max_tokens": 400, "stream": True}, "tiny"
    )
    await stream.__anext__()
    provider._worker._proc.kill()  # a segfault in native code looks the same from here
    with pytest.raises(UpstreamError, match="worker exited"):
        async for _ in stream:
            pass
    body = await asyncio.wait_for(
        provider.call(Operation.CHAT, {"messages": MSG, "max_tokens": 2}, "tiny"), 30
    )
    assert body["choices"][0]["message"]["content"] is not None
    await provider.aclose()
