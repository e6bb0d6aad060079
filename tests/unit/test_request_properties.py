"""Properties of request parsing: whatever a Python caller or a JSON body holds (lone
surrogates, integers past 64 bits, NaN and infinities, deep or odd shapes, in any field), the
result is a 400 ``InvalidRequestError`` or a request every later stage can carry: it encodes
as JSON, has a cache key, and its names can go into headers and stores."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noa.cache.key import VERSION, cache_key
from noa.errors import InvalidRequestError
from noa.wire.fields import name_problem
from noa.wire.operations import Operation, validated

MSG = [{"role": "user", "content": "hi"}]
BASES: dict[Operation, dict[str, Any]] = {
    Operation.CHAT: {"model": "m", "messages": MSG},
    Operation.COMPLETIONS: {"model": "m", "prompt": "x"},
    Operation.EMBEDDINGS: {"model": "m", "input": "x"},
}
FIELDS = [
    "model", "messages", "prompt", "input", "n", "max_tokens", "max_completion_tokens", "seed",
    "temperature", "top_p", "stop", "logit_bias", "dimensions", "tools", "tool_choice", "user",
    "stream", "stream_options", "response_format", "encoding_format", "extra",
]  # fmt: skip

# every code point, lone surrogates included
text = st.text(st.characters(codec=None, categories=None), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
    | st.floats()
    | text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=16,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "tool", "x"]) | text},
        optional={"content": json_values, "name": json_values, "tool_calls": json_values},
    ),
    max_size=3,
)


def bodies(operation: Operation) -> st.SearchStrategy[dict[str, Any]]:
    def body(changes: dict[str, Any], msgs: list[dict[str, Any]] | None) -> dict[str, Any]:
        return {**BASES[operation], **changes, **({"messages": msgs} if msgs else {})}

    fields = st.dictionaries(st.sampled_from(FIELDS) | text, json_values, max_size=4)
    return st.builds(body, fields, st.none() | messages)


def check(operation: Operation, body: dict[str, Any]) -> None:
    try:
        request = validated(operation, body)
    except InvalidRequestError as e:
        assert e.status_code == 400 and e.message
        return
    orjson.dumps(request)  # what goes to the cache, the upstream and the logs
    assert cache_key(operation.value, "m", request).startswith(VERSION)
    assert name_problem(request["model"]) is None


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(bodies(Operation.CHAT))
def test_chat_bodies_are_a_400_or_carried_on(body: dict[str, Any]) -> None:
    check(Operation.CHAT, body)


@FUZZ
@given(bodies(Operation.COMPLETIONS))
def test_completion_bodies_are_a_400_or_carried_on(body: dict[str, Any]) -> None:
    check(Operation.COMPLETIONS, body)


@FUZZ
@given(bodies(Operation.EMBEDDINGS))
def test_embedding_bodies_are_a_400_or_carried_on(body: dict[str, Any]) -> None:
    check(Operation.EMBEDDINGS, body)


@FUZZ
@given(json_values)
def test_any_value_as_a_whole_body_is_a_400_or_carried_on(body: Any) -> None:
    for operation in BASES:
        check(operation, body)
