"""The Anthropic provider through the real ``anthropic`` SDK against a fake Messages API."""

import pytest
from openapi import validate

from noa import errors
from noa.config import AnthropicProviderConfig
from noa.providers.anthropic import AnthropicProvider
from noa.testing.fake_upstream import FakeUpstream, Step
from noa.wire.operations import Operation

MSG = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


@pytest.fixture(params=["direct", "sdk"])
def provider(
    fake: FakeUpstream, upstream_key: str, request: pytest.FixtureRequest
) -> AnthropicProvider:
    config = AnthropicProviderConfig(
        max_retries=0, timeout_s=5, default_max_tokens=321, transport=request.param
    )
    return AnthropicProvider.from_config("anthropic", config, upstream_key, fake.base_url)


async def test_chat_translates_both_ways(
    provider: AnthropicProvider, fake: FakeUpstream, upstream_key: str
) -> None:
    body = await provider.call(
        Operation.CHAT, {"messages": MSG, "temperature": 0.7, "stop": ["X"]}, "claude-t"
    )
    validate("CreateChatCompletionResponse", body)
    assert body["choices"][0]["message"]["content"] == "echo: hello there"
    assert body["usage"] == {
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 2},
    }
    sent = fake.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["anthropic-version"] == "2026-10-21"
    assert sent.headers["authorization"] == f"Bearer {upstream_key}"
    assert sent.body["system"] == [{"type": "text", "text": "be brief"}]
    assert sent.body["max_tokens"] == 321 and sent.body["stop_sequences"] == ["X"]
    assert "temperature" not in sent.body


async def test_stream_and_tool_calls(provider: AnthropicProvider) -> None:
    chunks = [
        c async for c in provider.stream(Operation.CHAT, {"messages": MSG, "stream": True}, "c")
    ]
    for c in chunks:
        validate("CreateChatCompletionStreamResponse", c)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: hello there"
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    body = await provider.call(
        Operation.CHAT,
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [TOOL],
            "tool_choice": "required",
        },
        "c",
    )
    call = body["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "lookup", "arguments": '{"echo": "x"}'}
    assert body["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("step", "error"),
    [
        (Step(status=400), errors.InvalidRequestError),
        (Step(status=401), errors.UpstreamAuthError),
        (Step(status=429, headers={"retry-after": "3"}), errors.UpstreamRateLimitError),
        (Step(status=529), errors.UpstreamError),
        (Step(raw=b"<html>oops"), errors.UpstreamError),
        (Step(cut_after=4), errors.UpstreamError),
    ],
)
async def test_failures(
    provider: AnthropicProvider, fake: FakeUpstream, step: Step, error: type
) -> None:
    fake.script.append(step)
    with pytest.raises(error) as info:
        if step.cut_after is not None:
            async for _ in provider.stream(Operation.CHAT, {"messages": MSG, "stream": True}, "c"):
                pass
        else:
            await provider.call(Operation.CHAT, {"messages": MSG}, "c")
    assert type(info.value) is error and info.value.provider == "anthropic"


async def test_no_completions_or_embeddings(provider: AnthropicProvider) -> None:
    with pytest.raises(errors.InvalidRequestError, match="does not support embeddings"):
        await provider.call(Operation.EMBEDDINGS, {"input": "x"}, "c")
