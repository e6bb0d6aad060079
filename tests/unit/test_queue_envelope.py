"""The queue bridges' message formats: a request message becomes a checked ``Inbound`` or a
``Poison`` with its reason (never another exception, whatever the bytes: a hypothesis
property), the result message carries the id, correlation id and the job's answer, and a dead
letter the reason and the original."""

from __future__ import annotations

import contextlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noa.jobs.model import Job, JobStatus, Priority
from noa.queues.envelope import Poison, dead_letter, parse, result

CHAT = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}


def test_a_full_envelope() -> None:
    raw = orjson.dumps(
        {
            "id": "doc-42",
            "endpoint": "/v1/embeddings",
            "body": {"model": "embed", "input": "x"},
            "priority": "high",
            "metadata": {"doc": 42},
            "reply_to": "results",
            "callback_url": "https://example.com/hook",
            "correlation_id": "c-1",
        }
    )
    got = parse(raw, "broker-7")
    assert got.id == "doc-42" and got.endpoint == "/v1/embeddings"
    assert got.body["input"] == "x" and got.priority is Priority.HIGH
    assert (got.metadata, got.reply_to, got.callback_url, got.correlation_id) == (
        {"doc": 42}, "results", "https://example.com/hook", "c-1",
    )  # fmt: skip


def test_defaults_the_broker_id_and_model() -> None:
    got = parse(
        orjson.dumps({"body": {"messages": CHAT["messages"]}}),
        "broker-7",
        default_priority=Priority.LOW,
        default_model="smollm2",
    )
    assert got.id == "broker-7" and got.endpoint == "/v1/chat/completions"
    assert got.body["model"] == "smollm2" and got.priority is Priority.LOW


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "bad_json"),
        (b"[1, 2]", "bad_envelope"),
        (orjson.dumps({"body": CHAT}), "bad_envelope"),  # no id at all
        (orjson.dumps({"id": "a b", "body": CHAT}), "bad_envelope"),
        (orjson.dumps({"id": "a", "body": "hi"}), "bad_envelope"),
        (orjson.dumps({"id": "a", "body": CHAT, "extra": 1}), "bad_envelope"),
        (orjson.dumps({"id": "a", "body": CHAT, "priority": "urgent"}), "bad_envelope"),
        (orjson.dumps({"id": "a", "body": CHAT, "priority": True}), "bad_envelope"),
        (orjson.dumps({"id": "a", "body": CHAT, "reply_to": 5}), "bad_envelope"),
        (orjson.dumps({"id": "a", "body": CHAT, "endpoint": "/v1/images"}), "invalid_value"),
        (orjson.dumps({"id": "a", "body": {**CHAT, "stream": True}}), "invalid_value"),
        (orjson.dumps({"id": "a", "body": {"model": "gpt"}}), "invalid_value"),  # no messages
    ],
)
def test_poison_says_why(raw: bytes, code: str) -> None:
    with pytest.raises(Poison) as caught:
        parse(raw)
    assert caught.value.code == code, caught.value.message


def test_too_large() -> None:
    with pytest.raises(Poison) as caught:
        parse(orjson.dumps({"id": "a", "body": CHAT}), max_bytes=10)
    assert caught.value.code == "too_large"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_are_a_request_or_poison(raw: bytes) -> None:
    with contextlib.suppress(Poison):
        parse(raw, "m-1")


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "id": JSON | st.text(max_size=12),
            "endpoint": JSON | st.sampled_from(["/v1/chat/completions", "/v1/embeddings"]),
            "body": JSON | st.just(CHAT),
            "priority": JSON | st.sampled_from(["high", "low"]),
            "metadata": JSON,
            "reply_to": JSON,
            "correlation_id": JSON,
        },
    )
)
def test_any_envelope_is_a_request_or_poison(envelope: dict[str, object]) -> None:
    try:
        got = parse(orjson.dumps(envelope), "m-1")
    except Poison as p:
        assert p.code and p.message
    else:
        assert got.id and isinstance(got.body, dict)


def test_result_and_dead_letter() -> None:
    job = Job(
        id="job_1", key_id="", team=None, endpoint="/v1/chat/completions", body=CHAT,
        priority=Priority.MEDIUM, status=JobStatus.COMPLETED, run_at=0, created_at=0,
        updated_at=0, attempts=1, max_attempts=3, token=1, result={"object": "chat.completion"},
        metadata={"doc": 1, "noa_bridge": "orders"},
    )  # fmt: skip
    out = orjson.loads(result(job, "doc-42", "c-1"))
    assert out == {
        "id": "doc-42", "correlation_id": "c-1", "job_id": "job_1", "status": "completed",
        "result": {"object": "chat.completion"}, "metadata": {"doc": 1},
    }  # fmt: skip
    dead = orjson.loads(dead_letter(b"{oops", Poison("bad_json", "not JSON"), "m-9"))
    assert dead == {
        "id": "m-9", "reason": {"code": "bad_json", "message": "not JSON"},
        "original": "{oops", "truncated": False,
    }  # fmt: skip
