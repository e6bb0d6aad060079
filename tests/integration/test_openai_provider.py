"""The OpenAI provider through the real ``openai`` SDK against a fake upstream on loopback."""

import pytest
from openapi import validate

from noa import errors
from noa.config import OpenAIProviderConfig
from noa.providers.openai import OpenAIProvider
from noa.testing.fake_upstream import FakeUpstream, Step
from noa.wire.operations import Operation

MSG = [{"role": "user", "content": "hello there"}]


@pytest.fixture(params=["direct", "sdk"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def provider(fake: FakeUpstream, upstream_key: str, transport: str) -> OpenAIProvider:
    config = OpenAIProviderConfig(max_retries=0, timeout_s=5, transport=transport)
    return OpenAIProvider.from_config("openai", config, upstream_key, f"{fake.base_url}/v1")


async def test_chat_forwards_the_body_and_returns_the_upstream_json(
    provider: OpenAIProvider, fake: FakeUpstream, upstream_key: str
) -> None:
    body = await provider.call(
        Operation.CHAT,
        {"messages": MSG, "temperature": 0.3, "seed": 7, "user": "u", "custom_extra": {"a": 1}},
        "gpt-test",
    )
    validate("CreateChatCompletionResponse", body)
    assert body["choices"][0]["message"]["content"] == "echo: hello there"
    sent = fake.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {upstream_key}"
    assert sent.body == {
        "model": "gpt-test",
        "messages": MSG,
        "temperature": 0.3,
        "seed": 7,
        "user": "u",
        "custom_extra": {"a": 1},
    }


async def test_stream_asks_for_usage_and_yields_chunks(
    provider: OpenAIProvider, fake: FakeUpstream
) -> None:
    chunks = [
        c async for c in provider.stream(Operation.CHAT, {"messages": MSG, "stream": True}, "gpt")
    ]
    for c in chunks:
        validate("CreateChatCompletionStreamResponse", c)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: hello there"
    assert chunks[-1]["usage"]["total_tokens"] > 0
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}


async def test_tools_pass_through(provider: OpenAIProvider, fake: FakeUpstream) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    body = await provider.call(
        Operation.CHAT,
        {
            "messages": MSG,
            "tools": [tool],
            "tool_choice": "required",
            "response_format": {"type": "json_object"},
        },
        "gpt",
    )
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup"
    assert fake.requests[-1].body["tools"] == [tool]
    assert fake.requests[-1].body["response_format"] == {"type": "json_object"}


async def test_completions_and_embeddings(provider: OpenAIProvider, fake: FakeUpstream) -> None:
    body = await provider.call(Operation.COMPLETIONS, {"prompt": "say"}, "gpt-instruct")
    validate("CreateCompletionResponse", body)
    chunks = [
        c
        async for c in provider.stream(
            Operation.COMPLETIONS, {"prompt": "say", "stream": True}, "g"
        )
    ]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "echo: say"
    emb = await provider.call(Operation.EMBEDDINGS, {"input": ["a", "b"]}, "embed")
    validate("CreateEmbeddingResponse", emb)
    assert len(emb["data"]) == 2 and isinstance(emb["data"][0]["embedding"][0], float)
    assert fake.requests[-1].body["encoding_format"] == "float"


@pytest.mark.parametrize(
    ("step", "error", "retry_after"),
    [
        (Step(status=400), errors.InvalidRequestError, None),
        (Step(status=404), errors.NotFoundError, None),
        (Step(status=401), errors.UpstreamAuthError, None),
        (Step(status=429, headers={"retry-after": "7"}), errors.UpstreamRateLimitError, 7.0),
        (Step(status=500), errors.UpstreamError, None),
        (Step(status=503), errors.UpstreamError, None),
        (Step(raw=b"{not json"), errors.UpstreamError, None),
        (Step(raw=b"[1, 2]"), errors.UpstreamError, None),
    ],
)
async def test_upstream_failures_become_noa_errors(
    provider: OpenAIProvider, fake: FakeUpstream, step: Step, error: type, retry_after: float | None
) -> None:
    fake.script.append(step)
    with pytest.raises(error) as info:
        await provider.call(Operation.CHAT, {"messages": MSG}, "gpt")
    assert type(info.value) is error
    assert info.value.provider == "openai"
    assert info.value.retry_after == retry_after


async def test_stream_cut_before_done_is_an_error(
    provider: OpenAIProvider, fake: FakeUpstream
) -> None:
    fake.script.append(Step(cut_after=2))
    with pytest.raises(errors.UpstreamError, match="without \\[DONE\\]"):
        async for _ in provider.stream(Operation.CHAT, {"messages": MSG, "stream": True}, "gpt"):
            pass


async def test_timeouts_and_connection_errors(
    fake: FakeUpstream, upstream_key: str, transport: str
) -> None:
    slow = OpenAIProvider.from_config(
        "openai",
        OpenAIProviderConfig(max_retries=0, timeout_s=0.2, transport=transport),
        upstream_key,
        f"{fake.base_url}/v1",
    )
    fake.script.append(Step(delay_s=1.0))
    with pytest.raises(errors.UpstreamTimeoutError):
        await slow.call(Operation.CHAT, {"messages": MSG}, "gpt")
    dead = OpenAIProvider.from_config(
        "openai",
        OpenAIProviderConfig(max_retries=0, transport=transport),
        upstream_key,
        "http://127.0.0.1:9/v1",
    )
    with pytest.raises(errors.UpstreamError, match="could not be reached"):
        await dead.call(Operation.CHAT, {"messages": MSG}, "gpt")


async def test_health_probe_costs_no_tokens(provider: OpenAIProvider, fake: FakeUpstream) -> None:
    await provider.check()
    assert fake.paths() == ["/v1/models"]
