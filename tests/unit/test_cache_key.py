"""Cache keys: same meaning -> same key; any answer-changing difference -> another key."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from noa.cache.key import VERSION, cache_key, canonical, deterministic

text = st.text(min_size=0, max_size=20)
roles = st.sampled_from(["system", "user", "assistant"])
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": text}), min_size=1, max_size=4)
# answer-changing parameters and values for them
PARAMS: dict[str, st.SearchStrategy[Any]] = {
    "temperature": st.sampled_from([0, 0.2, 0.7, 1.5]),
    "top_p": st.sampled_from([0.1, 0.5, 0.9]),
    "max_completion_tokens": st.integers(1, 4096),
    "seed": st.integers(0, 2**31),
    "n": st.integers(1, 4),
    "stop": st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=3),
    "presence_penalty": st.sampled_from([-1.5, 0.5, 1.25]),
    "frequency_penalty": st.sampled_from([-0.5, 0.75, 2]),
    "logit_bias": st.dictionaries(
        st.sampled_from(["1", "50256", "42"]), st.sampled_from([-100, 5])
    ),
    "logprobs": st.booleans(),
    "response_format": st.sampled_from([{"type": "json_object"}, {"type": "text"}]),
    "tool_choice": st.sampled_from(["none", "required", "auto"]),
    "tools": st.just([{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    "top_k": st.integers(1, 100),  # a provider-specific extra
}
requests = st.fixed_dictionaries(
    {"messages": messages},
    optional={name: strategy for name, strategy in PARAMS.items()},
)


def _floaty(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: _floaty(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floaty(v) for v in value]
    return value


def same_meaning(request: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """``request`` said differently: nothing here may change the answer."""
    body = {k: v for k, v in request.items()}
    if rng.random() < 0.5:
        body = dict(reversed(list(body.items())))
    for ignored, value in (
        ("user", "someone"),
        ("stream", True),
        ("stream_options", {"include_usage": True}),
        ("metadata", {"team": "x"}),
        ("store", False),
        ("name_that_is_null", None),
    ):
        if rng.random() < 0.5:
            body[ignored] = value
    for key in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        if key in body and rng.random() < 0.5:
            body[key] = _floaty(body[key])
    if "max_completion_tokens" in body and rng.random() < 0.5:
        body["max_tokens"] = body.pop("max_completion_tokens")
    if "stop" in body and len(body["stop"]) == 1 and rng.random() < 0.5:
        body["stop"] = body["stop"][0]
    body["messages"] = [
        {**m, "content": [{"type": "text", "text": m["content"]}]} if rng.random() < 0.5 else m
        for m in body["messages"]
    ]
    return body


@settings(max_examples=300)
@given(requests, st.randoms(use_true_random=False))
def test_the_same_meaning_gets_the_same_key(request: dict[str, Any], rng: random.Random) -> None:
    assert cache_key("chat", "m", request) == cache_key("chat", "m", same_meaning(request, rng))


@settings(max_examples=300)
@given(requests, st.sampled_from(sorted(PARAMS)), st.data())
def test_any_answer_changing_parameter_changes_the_key(
    request: dict[str, Any], name: str, data: st.DataObject
) -> None:
    value = data.draw(PARAMS[name])
    changed = {**request, name: value}
    if canonical("chat", changed) == canonical("chat", request):
        return  # drew the value it already had
    assert cache_key("chat", "m", changed) != cache_key("chat", "m", request)


@given(requests, text.filter(bool))
def test_messages_model_tenant_and_operation_are_in_the_key(
    request: dict[str, Any], extra: str
) -> None:
    key = cache_key("chat", "m", request)
    longer = {**request, "messages": [*request["messages"], {"role": "user", "content": extra}]}
    assert cache_key("chat", "m", longer) != key
    assert cache_key("chat", "other-model", request) != key
    assert cache_key("chat", "m", request, tenant="team-a") != key
    assert cache_key("chat", "m", request, tenant="team-a") != cache_key(
        "chat", "m", request, tenant="team-b"
    )
    assert cache_key("completions", "m", request) != key
    assert key.startswith(f"{VERSION}:")


def test_an_unknown_field_is_assumed_to_matter() -> None:
    base = {"messages": [{"role": "user", "content": "hi"}]}
    assert cache_key("chat", "m", {**base, "reasoning_effort": "high"}) != cache_key(
        "chat", "m", base
    )


def test_only_reproducible_requests_are_deterministic() -> None:
    assert deterministic("chat", {"temperature": 0})
    assert deterministic("chat", {"temperature": 0.9, "seed": 7})
    assert not deterministic("chat", {"temperature": 0.9})
    assert not deterministic("chat", {})  # the default temperature is 1
    assert deterministic("embeddings", {})


@given(st.floats(min_value=2.0**63, allow_infinity=False) | st.floats(max_value=-(2.0**63)))
def test_an_integral_float_beyond_64_bits_still_has_a_key(value: float) -> None:
    # every float this large is integral; as an int orjson could not encode it
    request = {"messages": [{"role": "user", "content": "x"}], "x": {"y": [value]}}
    assert cache_key("chat", "m", request).startswith(f"{VERSION}:")
    assert cache_key("chat", "m", {**request, "seed": 1.0}) == cache_key(
        "chat", "m", {**request, "seed": 1}
    )
