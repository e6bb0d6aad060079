"""What an answer is charged: a stream cut early (the client left, the upstream failed) pays for
the prompt and the text that passed; an answer with no usage pays for what it holds; an answer
shared by single flight pays nothing and counts no provider call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from planned import ask
from test_admission import Clock, body, keeper, key, plan, route_of
from test_response_cache import answer, chat, make

from noa.access.accounting import Accounting
from noa.access.keys import Limits
from noa.errors import UpstreamError
from noa.observability.metrics import Metrics
from noa.routing.results import PrimedStream, Routed
from noa.wire.usage import StreamTally

PROMPT = 101  # body()'s 400 characters, estimated


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]} | (
        {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]} if finish else {}
    )


async def chunks(texts: list[str], fail_after: int | None = None) -> AsyncGenerator[Any, None]:
    yield chunk({"role": "assistant", "content": ""})
    for i, text in enumerate(texts):
        if fail_after is not None and i == fail_after:
            raise UpstreamError("the upstream reset the connection", code="upstream_error")
        yield chunk({"content": text})
    yield chunk({}, "stop")
    usage = {"prompt_tokens": 7, "completion_tokens": len(texts), "total_tokens": 7 + len(texts)}
    yield {"object": "chat.completion.chunk", "choices": [], "usage": usage}


def tokens(metrics: Metrics) -> dict[str, float]:
    series = metrics.snapshot()["ai_provider_tokens_total"]
    assert isinstance(series, dict)
    return {labels[-1]: value for labels, value in series.items()}


async def test_a_stream_the_client_leaves_is_charged_the_prompt_and_the_chunks_it_read() -> None:
    clock, metrics = Clock(), Metrics()
    gate = keeper(clock)
    accounting = Accounting(gate, clock=clock, metrics=metrics)
    principal = key(limits=Limits(tpm=10_000, budget_usd=1.0))
    meter = await accounting.admit(principal, plan(body(max_tokens=50)))
    upstream = PrimedStream(route_of("cheap"), None, chunks(["a"] * 20), None)
    stream = meter.watch(upstream)
    read = [await stream.__anext__() for _ in range(6)]  # the role delta and five words
    assert [c["choices"][0]["delta"].get("content") for c in read[1:]] == ["a"] * 5
    await stream.aclose()  # the client went away
    assert tokens(metrics) == {"input": PROMPT, "output": 5}
    cost = metrics.snapshot()["ai_provider_cost_total"]
    assert cost == {("openai", "gpt"): pytest.approx((PROMPT * 1 + 5 * 2) / 1e6)}
    requests = metrics.snapshot()["ai_provider_requests_total"]
    assert requests == {("openai", "gpt", "499"): 1}
    # the key's tokens per minute were charged the same: 10000 - (101 + 5) remain
    after = await gate.admit(principal, plan(body(max_tokens=1)))
    assert after is not None
    assert int(after.headers["x-ratelimit-remaining-tokens"]) == 10_000 - (PROMPT + 5) - 102


async def test_a_stream_whose_upstream_fails_midway_is_charged_what_passed() -> None:
    clock, metrics = Clock(), Metrics()
    accounting = Accounting(keeper(clock), clock=clock, metrics=metrics)
    meter = await accounting.admit(key(limits=Limits(tpm=10_000)), plan(body()))
    stream = meter.watch(PrimedStream(route_of("cheap"), None, chunks(["ab"] * 9, 3), None))
    with pytest.raises(UpstreamError):
        async for _ in stream:
            pass
    assert tokens(metrics) == {"input": PROMPT, "output": 3}
    assert metrics.snapshot()["ai_provider_requests_total"] == {("openai", "gpt", "502"): 1}


async def test_a_complete_stream_is_charged_the_usage_the_provider_reported() -> None:
    clock, metrics = Clock(), Metrics()
    accounting = Accounting(keeper(clock), clock=clock, metrics=metrics)
    meter = await accounting.admit(key(limits=Limits(tpm=10_000)), plan(body()))
    stream = meter.watch(PrimedStream(route_of("cheap"), None, chunks(["a"] * 4), None))
    async for _ in stream:
        pass
    assert tokens(metrics) == {"input": 7, "output": 4}


async def test_a_json_answer_without_usage_is_charged_what_it_holds() -> None:
    clock, metrics = Clock(), Metrics()
    accounting = Accounting(keeper(clock), clock=clock, metrics=metrics)
    meter = await accounting.admit(key(limits=Limits(tpm=10_000)), plan(body()))
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 40}}]}
    await meter.answered(Routed(answer, route_of("cheap")))
    assert tokens(metrics) == {"input": PROMPT, "output": 10}


def test_the_tally_counts_every_kind_of_generated_text() -> None:
    tally = StreamTally()
    tally.observe(chunk({"role": "assistant"}))
    tally.observe(chunk({"content": "é" * 3}))  # at least one token per chunk
    call = {"index": 0, "function": {"name": "lookup", "arguments": '{"q": "weather"}'}}
    tally.observe(chunk({"tool_calls": [call]}))
    tally.observe({"choices": [{"index": 1, "text": "completion text"}]})
    tally.observe({"choices": [{"index": 0, "delta": {"refusal": "no"}}]})
    assert tally.chunks == 4
    assert tally.completion_tokens == -(-(3 + 6 + 16 + 15 + 2) // 4)
    assert tally.usage(5) == {
        "prompt_tokens": 5,
        "completion_tokens": tally.completion_tokens,
        "total_tokens": 5 + tally.completion_tokens,
    }
    assert StreamTally().usage(0) is None


async def test_single_flight_followers_cost_nothing_and_count_no_provider_call() -> None:
    service, router = make()
    clock, metrics = Clock(), Metrics()
    service.accounting = Accounting(keeper(clock), clock=clock, metrics=metrics)
    router.gate = asyncio.Event()
    principal = key(limits=Limits(tpm=1_000_000))
    waiting = [asyncio.ensure_future(ask(service, chat("same"), None, principal)) for _ in "abcd"]
    await asyncio.sleep(0.01)
    router.gate.set()
    results = await asyncio.gather(*waiting)
    assert len(router.calls) == 1
    assert sorted(r.info.cache for r in results) == ["hit-flight"] * 3 + ["miss"]
    requests = metrics.snapshot()["ai_provider_requests_total"]
    assert isinstance(requests, dict) and sum(requests.values()) == 1
    usage = answer("echo: same")["usage"]  # one call's tokens, not four
    assert tokens(metrics) == {
        "input": usage["prompt_tokens"],
        "output": usage["completion_tokens"],
    }
