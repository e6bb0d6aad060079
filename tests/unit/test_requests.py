import pytest

from noa.errors import InvalidRequestError
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
