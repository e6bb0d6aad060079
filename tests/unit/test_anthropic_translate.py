import pytest
from openapi import validate

from noa.errors import InvalidRequestError, UpstreamError
from noa.wire.anthropic import StreamTranslator, from_anthropic, to_anthropic

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "w",
        "parameters": {"type": "object", "properties": {}},
    },
}


def test_system_messages_stop_user_and_sampling() -> None:
    params = to_anthropic(
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": "and kind"},
                {"role": "user", "content": "hi"},
            ],
            "stop": "END",
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 3,
            "user": "u-1",
            "metadata": {"openai": "only"},
            "service_tier": "default",
        },
        "claude-x",
        4096,
    )
    assert params["system"] == [
        {"type": "text", "text": "be brief"},
        {"type": "text", "text": "and kind"},
    ]
    assert params["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert params["stop_sequences"] == ["END"]
    assert params["max_tokens"] == 4096
    assert params["metadata"] == {"user_id": "u-1"}
    for dropped in ("temperature", "top_p", "seed", "service_tier"):
        assert dropped not in params


def test_max_tokens_prefers_max_completion_tokens() -> None:
    msgs = [{"role": "user", "content": "x"}]
    assert to_anthropic({"messages": msgs, "max_tokens": 5}, "m", 10)["max_tokens"] == 5
    assert (
        to_anthropic({"messages": msgs, "max_tokens": 5, "max_completion_tokens": 7}, "m", 10)[
            "max_tokens"
        ]
        == 7
    )


def test_tool_round_trip_and_merged_turns() -> None:
    params = to_anthropic(
        {
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                {"role": "user", "content": "thanks"},
            ],
            "tools": [TOOL],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        },
        "m",
        100,
    )
    assert params["tools"] == [
        {
            "name": "get_weather",
            "description": "w",
            "input_schema": {"type": "object", "properties": {}},
        }
    ]
    assert params["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert [m["role"] for m in params["messages"]] == ["user", "assistant", "user"]
    assert params["messages"][1]["content"] == [
        {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert params["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
        {"type": "text", "text": "thanks"},
    ]


def test_images_and_response_format() -> None:
    params = to_anthropic(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    ],
                }
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": {"type": "object"}},
            },
        },
        "m",
        10,
    )
    blocks = params["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
    }
    assert blocks[2]["source"] == {"type": "url", "url": "https://x/y.png"}
    assert params["output_config"] == {
        "format": {"type": "json_schema", "schema": {"type": "object"}}
    }


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{bad"}}],
                    }
                ]
            },
            "messages[0].tool_calls[0]",
        ),
        ({"messages": [{"role": "system", "content": "only system"}]}, "messages"),
    ],
)
def test_untranslatable_requests_are_400s_naming_the_field(request_: dict, param: str) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], **request_}
    with pytest.raises(InvalidRequestError) as info:
        to_anthropic(body, "m", 10)
    assert info.value.param == param


def test_response_translation_text_tools_usage() -> None:
    body = from_anthropic(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [
                {"type": "thinking", "thinking": "hmm"},
                {"type": "text", "text": "Hi"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
            ],
            "stop_reason": "tool_use",
            "usage": {
                "input_tokens": 10,
                "output_tokens": 5,
                "cache_read_input_tokens": 4,
                "cache_creation_input_tokens": 1,
            },
        }
    )
    validate("CreateChatCompletionResponse", body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Hi"
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a": 1}'}
    assert body["usage"]["prompt_tokens"] == 15 and body["usage"]["completion_tokens"] == 5
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 4}


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons(reason: str, finish: str) -> None:
    body = from_anthropic({"id": "m", "content": [], "stop_reason": reason, "usage": {}})
    assert body["choices"][0]["finish_reason"] == finish


def test_stream_translation() -> None:
    t = StreamTranslator(created=1)
    events = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "model": "claude-x",
                "usage": {"input_tokens": 7, "output_tokens": 1},
            },
        },
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "He"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "y"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"a"'},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": ": 1}"},
        },
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ]
    chunks = [c for e in events for c in t.feed(e)]
    for c in chunks:
        validate("CreateChatCompletionStreamResponse", c)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hey"
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls[0]["id"] == "t1" and calls[0]["function"]["name"] == "f"
    assert "".join(c["function"]["arguments"] for c in calls) == '{"a": 1}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 9
    assert chunks[-1]["usage"]["prompt_tokens"] == 7
    assert t.finished
    assert {c["id"] for c in chunks} == {"msg_1"}


def test_stream_error_event_raises() -> None:
    with pytest.raises(UpstreamError, match="overloaded"):
        StreamTranslator(1).feed(
            {"type": "error", "error": {"type": "overloaded_error", "message": "overloaded"}}
        )
