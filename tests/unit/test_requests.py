from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from noa.errors import InvalidRequestError
from noa.wire.json_bounds import MAX_DEPTH, depth_exceeds
from noa.wire.operations import Operation, validated
from noa.wire.requests import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, dump
from noa.wire.validation import parse

MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "param", "text"),
    [
        ({"messages": MSG}, "model", "Missing required parameter: 'model'"),
        ({"model": "m"}, "messages", "Missing required parameter: 'messages'"),
        ({"model": "m", "messages": []}, "messages", "at least 1"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role", ""),
        ({"model": "m", "messages": MSG, "temperature": 3}, "temperature", "less than or equal"),
        ({"model": "m", "messages": MSG, "top_p": -1}, "top_p", ""),
        ({"model": "m", "messages": MSG, "n": 0}, "n", ""),
        ({"model": "m", "messages": MSG, "max_tokens": "many"}, "max_tokens", ""),
        ({"model": "m", "messages": MSG, "stream": "yes please"}, "stream", ""),
        (
            {"model": "m", "messages": MSG, "tools": [{"type": "function", "function": {}}]},
            "tools",
            "tools[0].function.name",
        ),
    ],
)
def test_schema_violations_name_the_field(body: dict, param: str, text: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse(ChatCompletionRequest, body)
    assert info.value.param == param
    assert info.value.status_code == 400
    assert text in info.value.message


def test_not_an_object() -> None:
    with pytest.raises(InvalidRequestError, match="JSON object"):
        parse(ChatCompletionRequest, [1, 2])


def test_dump_keeps_only_what_the_client_set_and_extras() -> None:
    request = parse(
        ChatCompletionRequest,
        {"model": "m", "messages": MSG, "seed": 1, "reasoning_effort": "low", "stop": None},
    )
    assert dump(request) == {"model": "m", "messages": MSG, "seed": 1, "reasoning_effort": "low"}


@pytest.mark.parametrize("value", ["", [], [""], [[]]])
def test_embedding_inputs_must_not_be_empty(value: object) -> None:
    with pytest.raises(InvalidRequestError, match="input"):
        parse(EmbeddingRequest, {"model": "m", "input": value})


def test_completion_prompt_forms() -> None:
    for prompt in ("x", ["a", "b"], [1, 2], [[1], [2]]):
        parse(CompletionRequest, {"model": "m", "prompt": prompt})
    with pytest.raises(InvalidRequestError, match="prompt"):
        parse(CompletionRequest, {"model": "m", "prompt": {"a": 1}})


def nested(depth: int) -> Any:
    """A value whose objects and arrays nest ``depth`` levels (a scalar at the bottom)."""
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (ChatCompletionRequest, {"model": "m", "messages": MSG}),
        (CompletionRequest, {"model": "m", "prompt": "x"}),
        (EmbeddingRequest, {"model": "m", "input": "x"}),
    ],
)
@pytest.mark.parametrize("where", ["extra", "response_format", "messages"])
def test_a_body_nested_deeper_than_the_limit_is_a_400(
    model: type[BaseModel], body: dict[str, Any], where: str
) -> None:
    # the body is level 1: a field of it may nest MAX_DEPTH - 1 levels, a content part's
    # field (body, messages, message, content, part) MAX_DEPTH - 5
    if where == "messages":
        inner = [{"role": "user", "content": [{"type": "text", "x": nested(MAX_DEPTH - 5)}]}]
        deep = [{"role": "user", "content": [{"type": "text", "x": nested(MAX_DEPTH - 4)}]}]
    else:
        inner, deep = nested(MAX_DEPTH - 1), nested(MAX_DEPTH)
    parse(model, {**body, where: inner})
    for too_deep in (deep, nested(300), nested(1000)):
        with pytest.raises(InvalidRequestError) as info:
            parse(model, {**body, where: too_deep})
        assert info.value.status_code == 400
        assert info.value.code == "json_too_deep"
        assert f"more than {MAX_DEPTH} levels deep" in info.value.message


def test_a_python_caller_s_deep_body_is_a_400_too() -> None:
    with pytest.raises(InvalidRequestError, match="levels deep"):
        validated(Operation.CHAT, {"model": "m", "messages": MSG, "x": nested(300)})


@given(st.integers(min_value=0, max_value=200))
def test_depth_is_measured_exactly(depth: int) -> None:
    value = nested(depth)
    assert depth_exceeds(value, depth) is False
    assert depth_exceeds(value, depth - 1) is (depth > 0)
