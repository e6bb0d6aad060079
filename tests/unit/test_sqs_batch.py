"""SQS calls made together (noa/queues/sqs_batch.py): concurrent calls share batch requests of at
most ten entries of one queue and a payload bound, each caller gets its own entry's answer, at
most ``lanes`` requests are on their way, and no call is ever left waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noa.queues.sqs_batch import MAX_ENTRIES, Batcher, EntryFailed, payload_bytes


class FakeSqs:
    """Answers batch requests like SQS: every entry succeeds but those whose body is
    ``"refuse"``; records each request; holds each for a few loop turns."""

    def __init__(self, turns: int = 3, fail: Exception | None = None) -> None:
        self.requests: list[tuple[str, list[dict[str, Any]]]] = []
        self.turns = turns
        self.fail = fail
        self.on_the_way = 0
        self.most_on_the_way = 0

    async def send(self, url: str, entries: list[dict[str, Any]]) -> Mapping[str, Any]:
        self.requests.append((url, entries))
        self.on_the_way += 1
        self.most_on_the_way = max(self.most_on_the_way, self.on_the_way)
        try:
            for _ in range(self.turns):
                await asyncio.sleep(0)
            if self.fail is not None:
                raise self.fail
        finally:
            self.on_the_way -= 1
        ok = [e for e in entries if e.get("MessageBody") != "refuse"]
        bad = [e for e in entries if e.get("MessageBody") == "refuse"]
        return {
            "Successful": [{"Id": e["Id"], "MessageId": f"m-{e['MessageBody']}"} for e in ok],
            "Failed": [
                {
                    "Id": e["Id"],
                    "Code": "InvalidMessageContents",
                    "Message": "no",
                    "SenderFault": True,
                }
                for e in bad
            ],
        }


def entry(body: str) -> dict[str, Any]:
    return {"MessageBody": body}


async def test_a_single_call_goes_at_once_alone() -> None:
    sqs = FakeSqs()
    batcher = Batcher(sqs.send)
    answer = await batcher("q1", entry("a"))
    assert answer["MessageId"] == "m-a"
    assert sqs.requests == [("q1", [{"MessageBody": "a", "Id": "0"}])]


async def test_concurrent_calls_share_requests_of_ten_of_one_queue() -> None:
    sqs = FakeSqs()
    batcher = Batcher(sqs.send, lanes=1)
    calls = [batcher("q1", entry(f"a{i}")) for i in range(25)]
    calls += [batcher("q2", entry(f"b{i}")) for i in range(5)]
    answers = await asyncio.gather(*calls)
    assert [a["MessageId"] for a in answers] == [f"m-a{i}" for i in range(25)] + [
        f"m-b{i}" for i in range(5)
    ]
    assert all(len(entries) <= MAX_ENTRIES for _, entries in sqs.requests)
    assert sorted(len(e) for u, e in sqs.requests if u == "q1") == [5, 10, 10]
    assert [len(e) for u, e in sqs.requests if u == "q2"] == [5]
    for _, entries in sqs.requests:  # ids are the entries' places in their request
        assert [e["Id"] for e in entries] == [str(i) for i in range(len(entries))]


async def test_a_refused_entry_fails_only_its_caller() -> None:
    batcher = Batcher(FakeSqs().send)
    out = await asyncio.gather(
        batcher("q", entry("a")), batcher("q", entry("refuse")), batcher("q", entry("b")),
        return_exceptions=True,
    )  # fmt: skip
    assert out[0]["MessageId"] == "m-a" and out[2]["MessageId"] == "m-b"  # type: ignore[index]
    assert isinstance(out[1], EntryFailed) and out[1].code == "InvalidMessageContents"
    assert out[1].sender_fault


async def test_a_failed_request_fails_each_of_its_callers_and_the_next_goes_on() -> None:
    sqs = FakeSqs(fail=ConnectionError("gone"))
    batcher = Batcher(sqs.send, lanes=1)
    out = await asyncio.gather(
        *(batcher("q", entry(str(i))) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, ConnectionError) for o in out)
    sqs.fail = None
    assert (await batcher("q", entry("after")))["MessageId"] == "m-after"


async def test_a_batch_refused_for_its_size_goes_one_by_one() -> None:
    sqs = FakeSqs()
    too_long = ValueError("BatchRequestTooLong")

    async def send(url: str, entries: list[dict[str, Any]]) -> Mapping[str, Any]:
        if len(entries) > 1:
            sqs.requests.append((url, entries))
            raise too_long
        return await sqs.send(url, entries)

    batcher = Batcher(send, lanes=1, split=lambda e: e is too_long)
    out = await asyncio.gather(*(batcher("q", entry(str(i))) for i in range(3)))
    assert [o["MessageId"] for o in out] == ["m-0", "m-1", "m-2"]
    assert [len(e) for _, e in sqs.requests] == [3, 1, 1, 1]


async def test_the_payload_bound_splits_batches_and_a_heavy_entry_goes_alone() -> None:
    sqs = FakeSqs()
    batcher = Batcher(sqs.send, lanes=1, max_bytes=100)
    bodies = ["x" * 40, "y" * 40, "z" * 40, "w" * 500, "v" * 10]
    await asyncio.gather(*(batcher("q", entry(b)) for b in bodies))
    sizes = [[payload_bytes(e) for e in entries] for _, entries in sqs.requests]
    assert all(len(s) == 1 or sum(s) <= 100 for s in sizes)
    assert [500] in sizes


async def test_at_most_lanes_requests_on_their_way() -> None:
    sqs = FakeSqs(turns=5)
    batcher = Batcher(sqs.send, lanes=3)
    await asyncio.gather(*(batcher("q", entry(str(i))) for i in range(200)))
    assert sqs.most_on_the_way == 3
    assert sum(len(e) for _, e in sqs.requests) == 200


async def test_close_cancels_what_waits() -> None:
    sqs = FakeSqs(turns=50)
    batcher = Batcher(sqs.send, lanes=1)
    calls = [asyncio.ensure_future(batcher("q", entry(str(i)))) for i in range(30)]
    await asyncio.sleep(0)
    await batcher.close()
    await asyncio.gather(*calls, return_exceptions=True)
    assert all(c.cancelled() for c in calls)


def test_lanes_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Batcher(FakeSqs().send, lanes=0)


@settings(max_examples=60, deadline=None)
@given(
    plan=st.lists(st.tuples(st.integers(0, 4), st.sampled_from(["q1", "q2", "q3"])), max_size=60),
    lanes=st.integers(1, 4),
    turns=st.integers(0, 4),
)
def test_every_call_is_answered_whenever_it_comes(
    plan: list[tuple[int, str]], lanes: int, turns: int
) -> None:
    """Calls arriving at any loop turn, while senders start and finish: each gets its answer."""

    async def run() -> None:
        sqs = FakeSqs(turns=turns)
        batcher = Batcher(sqs.send, lanes=lanes)

        async def call(i: int, wait: int, url: str) -> str:
            for _ in range(wait):
                await asyncio.sleep(0)
            return str((await asyncio.wait_for(batcher(url, entry(str(i))), 5))["MessageId"])

        got = await asyncio.gather(*(call(i, w, u) for i, (w, u) in enumerate(plan)))
        assert got == [f"m-{i}" for i in range(len(plan))]
        assert sum(len(e) for _, e in sqs.requests) == len(plan)
        assert sqs.most_on_the_way <= lanes

    asyncio.run(run())


@pytest.mark.parametrize("turns", range(4))
async def test_a_call_as_the_last_sender_finishes_is_answered(turns: int) -> None:
    """A second call at every loop turn around the moment the only sender finishes (when a
    finished sender still counted until its done-callback ran, one was left waiting)."""
    for later in range(12):
        sqs = FakeSqs(turns=turns)
        batcher = Batcher(sqs.send, lanes=1)

        async def second(wait: int, b: Batcher = batcher) -> Mapping[str, Any]:
            for _ in range(wait):
                await asyncio.sleep(0)
            return await asyncio.wait_for(b("q", entry("second")), 2)

        first, other = await asyncio.gather(batcher("q", entry("first")), second(later))
        assert (first["MessageId"], other["MessageId"]) == ("m-first", "m-second")
