"""A batch input line parses into a request or a line error, never an exception (a property
test over any text and over near-valid lines), and each of OpenAI's checks names its field."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from noa.jobs.batch_lines import BatchLine, LineError, duplicate, parse_line

CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"
BODY = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def line(**fields: Any) -> str:
    return json.dumps({"custom_id": "r1", "method": "POST", "url": CHAT, "body": BODY} | fields)


def check(result: BatchLine | LineError, number: int) -> None:
    assert isinstance(result, BatchLine | LineError)
    assert result.line == number
    if isinstance(result, BatchLine):
        assert result.custom_id and result.method == "POST"
        json.dumps(result.body, allow_nan=False)
        orjson.dumps(result.body)
    else:
        assert result.code and result.message
        assert set(result.public()) == {"code", "message", "param", "line"}


@settings(max_examples=400)
@given(text=st.text(), number=st.integers(min_value=1, max_value=10**9))
def test_any_text_is_a_request_or_a_line_error(text: str, number: int) -> None:
    check(parse_line(text, number, CHAT), number)


@settings(max_examples=300)
@given(
    custom_id=json_values,
    method=st.sampled_from(["POST", "GET", "post"]) | json_values,
    url=st.sampled_from([CHAT, EMBED, "/v1/completions"]) | json_values,
    body=st.fixed_dictionaries(
        {"model": st.sampled_from(["gpt", ""]) | json_values},
        optional={
            "messages": st.just(BODY["messages"]) | json_values,
            "stream": json_values,
            "max_tokens": json_values,
            "temperature": json_values,
        },
    )
    | json_values,
    endpoint=st.sampled_from([CHAT, EMBED]),
)
def test_near_valid_lines_are_requests_or_line_errors(
    custom_id: Any, method: Any, url: Any, body: Any, endpoint: str
) -> None:
    try:
        text = json.dumps({"custom_id": custom_id, "method": method, "url": url, "body": body})
    except (TypeError, ValueError):
        return
    check(parse_line(text, 7, endpoint), 7)


def test_a_valid_line_is_the_validated_request() -> None:
    parsed = parse_line(line(), 3, CHAT)
    assert isinstance(parsed, BatchLine)
    assert (parsed.custom_id, parsed.url, parsed.line) == ("r1", CHAT, 3)
    assert parsed.body["model"] == "gpt"
    assert parsed.body["messages"] == BODY["messages"]


def test_each_check_names_its_field() -> None:
    cases = {
        "not json": ("invalid_json_line", None),
        "[1, 2]": ("invalid_json_line", None),
        line(custom_id=None): ("missing_custom_id", "custom_id"),
        line(custom_id=""): ("invalid_custom_id", "custom_id"),
        line(custom_id=5): ("invalid_custom_id", "custom_id"),
        line(custom_id="a\u0000b"): ("invalid_custom_id", "custom_id"),
        line(method="GET"): ("invalid_method", "method"),
        line(url=EMBED): ("invalid_url", "url"),
        line(body=[1]): ("invalid_request", "body"),
        line(body={"model": "gpt"}): (None, "body.messages"),
        line(body=BODY | {"stream": True}): ("invalid_value", "body.stream"),
    }
    for text, (code, param) in cases.items():
        parsed = parse_line(text, 1, CHAT)
        assert isinstance(parsed, LineError), text
        assert parsed.param == param, (text, parsed)
        if code is not None:
            assert parsed.code == code, (text, parsed)


def test_a_duplicate_names_the_first_line() -> None:
    parsed = parse_line(line(), 9, CHAT)
    assert isinstance(parsed, BatchLine)
    error = duplicate(parsed, 2)
    assert (error.code, error.line, error.custom_id) == ("duplicate_custom_id", 9, "r1")
    assert "line 2" in error.message
