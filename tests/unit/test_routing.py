"""The router core: fallback order, retries and backoff, breakers (local and shared), quotas,
deadlines, strategies and streaming failover, with scripted in-process providers and a manual
clock (nothing sleeps for real)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from clocks import ManualClock
from planned import PlannedRouter

from noa.config import RoutingConfig, parse_config
from noa.errors import (
    InvalidRequestError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from noa.providers.base import Body, Provider
from noa.routing.breakers.board import Breakers, State
from noa.routing.breakers.hub import BreakerHub, BreakerLink, ChangeOutbox, stop_tasks
from noa.routing.quota import ProviderQuota
from noa.routing.registry import ModelRegistry, ProviderInfo
from noa.routing.router import Router
from noa.wire.operations import Operation


def completion(text: str) -> Body:
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def chunk(text: str) -> Body:
    return {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }


ROLE = {
    "id": "x",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "m",
    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
}


class Scripted(Provider):
    """Outcomes in order (then ``default``): "ok", an exception, "cut" (stream: one chunk, then
    an error), "stall" (stream: nothing, ever), "role" (stream: OpenAI's role delta first),
    "role-cut" / "role-stall" (the role delta, then an error / nothing), or a callable run
    before answering."""

    kind = "openai"

    def __init__(self, name: str, *outcomes: Any, default: Any = "ok") -> None:
        self.name = name
        self.outcomes: deque[Any] = deque(outcomes)
        self.default = default
        self.calls: list[str] = []
        # looked up at each call: a test may replace ``chat`` with a behaviour of its own
        self.answers = {Operation.CHAT: lambda request, model: self.chat(request, model)}
        self.streams = {Operation.CHAT: lambda request, model: self.stream_chat(request, model)}

    def _next(self, model: str) -> Any:
        self.calls.append(model)
        outcome = self.outcomes.popleft() if self.outcomes else self.default
        if callable(outcome):
            outcome = outcome()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def chat(self, request: Body, model: str) -> Body:
        self._next(model)
        return completion(f"{self.name}:{model}")

    async def stream_chat(self, request: Body, model: str) -> AsyncGenerator[Body, None]:
        outcome = self._next(model)
        if outcome == "stall":
            await asyncio.Event().wait()
        if isinstance(outcome, str) and outcome.startswith("role"):
            yield dict(ROLE)
            if outcome == "role-cut":
                raise UpstreamError("connection reset after the role delta", provider=self.name)
            if outcome == "role-stall":
                await asyncio.Event().wait()
        yield chunk(f"{self.name}:")
        if outcome == "cut":
            raise UpstreamError("connection reset mid-stream", provider=self.name)
        yield chunk(model)


CHAIN = {
    "providers": {
        "p1": {"kind": "openai", "limits": {"rpm": 2}},
        "p2": {"kind": "openai"},
        "p3": {"kind": "openai"},
    },
    "models": [
        {
            "id": "m",
            "chain": [
                {"provider": "p1", "upstream": "a", "price": {"input": 5, "output": 15}},
                {"provider": "p2", "upstream": "b", "price": {"input": 0.1, "output": 0.4}},
            ],
        },
        {"id": "solo", "provider": "p3", "upstream": "c"},
    ],
}


def make_router(
    *providers: Scripted,
    clock: ManualClock,
    routing: dict[str, Any] | None = None,
    quotas: dict[str, ProviderQuota] | None = None,
    breakers: Breakers | None = None,
    strategy: str | None = None,
) -> PlannedRouter:
    raw = {**CHAIN, "routing": routing or {}}
    if strategy:
        raw["models"] = [{**raw["models"][0], "strategy": strategy}, raw["models"][1]]
    config = parse_config(raw)
    infos = [ProviderInfo(n, "openai", True) for n in ("p1", "p2", "p3")]
    registry = ModelRegistry(config.models, infos, {}, config.routing)
    router = Router(
        {p.name: p for p in providers},
        routing=config.routing,
        quotas=quotas,
        breakers=breakers,
        clock=clock,
        sleep=clock.sleep,
        rng=lambda: 0.5,
    )
    return PlannedRouter(router, registry)


REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def test_falls_back_after_retrying_with_backoff() -> None:
    clock = ManualClock()
    p1 = Scripted("p1", default=UpstreamError("scripted 500", provider="p1"))
    p2 = Scripted("p2")
    router = make_router(p1, p2, clock=clock, routing={"retries": 2})
    routed = await router.chat(dict(REQUEST))
    assert routed.body["choices"][0]["message"]["content"] == "p2:b"
    assert p1.calls == ["a", "a", "a"] and p2.calls == ["b"]
    # 2^n * 0.2 s plus 30% * 0.5 of it as jitter
    assert clock.slept == [0.23, 0.46]
    info = routed.info
    assert (info.provider, info.upstream, info.model, info.attempts, info.fallbacks) == (
        "p2",
        "b",
        "m",
        4,
        1,
    )
    assert info.headers()["x-noa-attempts"] == "4"
    assert info.upstream_s == 0.0  # the backoff sleeps were the gateway's time, not upstream


async def test_backoff_is_capped() -> None:
    clock = ManualClock()
    p3 = Scripted("p3", *[UpstreamError("down")] * 4)
    router = make_router(
        p3, clock=clock, routing={"retries": 4, "backoff_base_s": 1, "backoff_cap_s": 2.5}
    )
    await router.chat({**REQUEST, "model": "solo"})
    assert clock.slept == [1.15, 2.3, 2.5, 2.5]


async def test_client_errors_never_fall_back() -> None:
    clock = ManualClock()
    p1 = Scripted("p1", InvalidRequestError("max_tokens is too large"))
    p2 = Scripted("p2")
    router = make_router(p1, p2, clock=clock)
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        await router.chat(dict(REQUEST))
    assert p2.calls == [] and clock.slept == []
    assert router.breakers.get("p1/a").consecutive == 0  # the upstream answered: not a failure


async def test_retry_after_is_honoured_or_moves_on_when_too_long() -> None:
    clock = ManualClock()
    p1 = Scripted("p1", UpstreamRateLimitError("slow down", retry_after=1.5))
    p2 = Scripted("p2")
    router = make_router(p1, p2, clock=clock)
    assert (await router.chat(dict(REQUEST))).info.provider == "p1"
    assert clock.slept == [1.5] and p1.calls == ["a", "a"]

    clock.slept.clear()
    p1.outcomes.append(UpstreamRateLimitError("slow down", retry_after=30))
    assert (await router.chat(dict(REQUEST))).info.provider == "p2"
    assert clock.slept == []  # 30 s is over max_retry_after_s: the next candidate answers now


async def test_upstream_auth_failures_fall_back_without_retrying() -> None:
    from noa.errors import UpstreamAuthError

    clock = ManualClock()
    p1 = Scripted("p1", UpstreamAuthError("bad key", provider="p1"))
    p2 = Scripted("p2")
    router = make_router(p1, p2, clock=clock)
    assert (await router.chat(dict(REQUEST))).info.provider == "p2"
    assert p1.calls == ["a"] and clock.slept == []


async def test_every_failure_is_named_in_a_502() -> None:
    clock = ManualClock()
    p1 = Scripted("p1", default=UpstreamError("scripted 500"))
    p2 = Scripted("p2", default=UpstreamTimeoutError("read timed out"))
    router = make_router(p1, p2, clock=clock, routing={"retries": 0})
    with pytest.raises(UpstreamError) as info:
        await router.chat(dict(REQUEST))
    assert info.value.status_code == 502 and info.value.code == "all_providers_failed"
    assert "p1/a: scripted 500" in info.value.message
    assert "p2/b: read timed out" in info.value.message


async def test_a_single_candidate_keeps_its_own_error() -> None:
    clock = ManualClock()
    p3 = Scripted("p3", default=UpstreamTimeoutError("read timed out"))
    router = make_router(p3, clock=clock, routing={"retries": 0})
    with pytest.raises(UpstreamTimeoutError) as info:
        await router.chat({**REQUEST, "model": "solo"})
    assert info.value.status_code == 504


async def test_the_deadline_bounds_the_whole_chain() -> None:
    clock = ManualClock()

    def slow_failure() -> UpstreamError:
        clock.now += 4
        return UpstreamError("scripted 500")

    p1 = Scripted("p1", default=slow_failure)
    p2 = Scripted("p2")
    router = make_router(p1, p2, clock=clock, routing={"deadline_s": 6, "retries": 3})
    with pytest.raises(UpstreamTimeoutError) as info:
        await router.chat(dict(REQUEST))
    assert info.value.code == "deadline_exceeded" and info.value.status_code == 504
    # t=4: fails, retry after 0.23 s; t=8.23: fails again, past the deadline: p2 is never tried
    assert len(p1.calls) == 2 and p2.calls == []


async def test_a_hanging_upstream_is_cut_at_the_deadline() -> None:
    clock = ManualClock()
    p3 = Scripted("p3", default=lambda: None)

    async def hang(request: Body, model: str) -> Body:
        await asyncio.Event().wait()
        raise AssertionError

    p3.chat = hang  # type: ignore[method-assign]
    router = make_router(p3, clock=clock, routing={"deadline_s": 0.02})
    with pytest.raises(UpstreamTimeoutError, match="deadline"):
        await router.chat({**REQUEST, "model": "solo"})
    assert router.stats.get("p3/c").in_flight == 0


async def test_breaker_opens_skips_then_probes_once_and_closes() -> None:
    clock = ManualClock()
    p1 = Scripted("p1", *[UpstreamError("scripted 500")] * 5)
    p2 = Scripted("p2")
    router = make_router(p1, p2, clock=clock, routing={"retries": 0})
    for _ in range(5):
        assert (await router.chat(dict(REQUEST))).info.provider == "p2"
    assert router.breakers.get("p1/a").state is State.OPEN
    for _ in range(10):
        assert (await router.chat(dict(REQUEST))).info.fallbacks == 1
    assert len(p1.calls) == 5  # nothing reaches p1 while OPEN

    clock.now += 30  # cooldown over: the next request is the one probe, and p1 answers
    assert (await router.chat(dict(REQUEST))).info.provider == "p1"
    assert router.breakers.get("p1/a").state is State.CLOSED
    assert len(p1.calls) == 6


async def test_a_failed_probe_reopens_and_only_one_probe_goes_at_a_time() -> None:
    clock = ManualClock()
    gate = asyncio.Event()
    p1 = Scripted("p1", *[UpstreamError("scripted 500")] * 5)
    p2 = Scripted("p2")
    router = make_router(p1, p2, clock=clock, routing={"retries": 0})
    for _ in range(5):
        await router.chat(dict(REQUEST))
    clock.now += 30

    real_chat = p1.chat

    async def slow_probe(request: Body, model: str) -> Body:
        await gate.wait()
        raise UpstreamError("still down")

    p1.chat = slow_probe  # type: ignore[method-assign]
    probe = asyncio.ensure_future(router.chat(dict(REQUEST)))
    await asyncio.sleep(0)
    others = [await router.chat(dict(REQUEST)) for _ in range(3)]
    assert {o.info.provider for o in others} == {"p2"}  # the probe is out: everyone else skips
    gate.set()
    assert (await probe).info.provider == "p2"  # the probe failed, p2 answered it
    assert router.breakers.get("p1/a").state is State.OPEN
    p1.chat = real_chat  # type: ignore[method-assign]


async def test_error_rate_over_the_window_opens_the_breaker() -> None:
    clock = ManualClock()
    board = Breakers(
        parse_config({}).routing.breaker.model_copy(update={"failure_threshold": 100}),
        clock=clock,
    )
    for i in range(20):
        board.record("p/x", ok=i % 2 == 0)  # 50% failures, never 100 in a row
        clock.now += 0.5
    assert board.get("p/x").state is State.OPEN


async def test_all_circuits_open_is_a_503_with_retry_after() -> None:
    clock = ManualClock()
    p3 = Scripted("p3", default=UpstreamError("scripted 500"))
    router = make_router(p3, clock=clock, routing={"retries": 0})
    for _ in range(5):
        with pytest.raises(UpstreamError):
            await router.chat({**REQUEST, "model": "solo"})
    clock.now += 10
    with pytest.raises(ServiceUnavailableError) as info:
        await router.chat({**REQUEST, "model": "solo"})
    assert info.value.status_code == 503 and info.value.code == "circuit_open"
    assert info.value.headers() == {"retry-after": "20"}
    assert len(p3.calls) == 5


async def test_breaker_state_is_shared_between_two_routers() -> None:
    clock = ManualClock()
    hub = BreakerHub(clock=clock)
    routers, links = [], []
    p1 = Scripted("p1", default=UpstreamError("scripted 500"))
    p2 = Scripted("p2")
    for _ in range(2):

        async def claim(key: str) -> bool:
            return hub.claim_probe(key)

        outbox = ChangeOutbox()
        board = Breakers(
            RoutingConfig().breaker, clock=clock, claim_probe=claim, on_change=outbox.put
        )

        async def publish(change: Any) -> None:
            hub.report(change.key, change.state.value, change.remaining_s)

        async def watch(version: int) -> dict[str, Any]:
            return await hub.watch(version)

        link = BreakerLink(board, outbox, publish, watch)
        link.start()
        links.append(link)
        routers.append(make_router(p1, p2, clock=clock, breakers=board, routing={"retries": 0}))
    a, b = routers
    try:
        for _ in range(5):
            await a.chat(dict(REQUEST))
        assert a.breakers.get("p1/a").state is State.OPEN
        for _ in range(20):  # the change travels a -> hub -> b
            if b.breakers.get("p1/a").state is State.OPEN:
                break
            await asyncio.sleep(0)
        assert b.breakers.get("p1/a").state is State.OPEN
        await b.chat(dict(REQUEST))
        assert len(p1.calls) == 5  # b never called p1: a's discovery protected it

        clock.now += 30
        p1.default = "ok"
        results = await asyncio.gather(a.chat(dict(REQUEST)), b.chat(dict(REQUEST)))
        assert sorted(r.info.provider for r in results) == ["p1", "p2"]  # one probe for both
        assert len(p1.calls) == 6
        for _ in range(20):
            if b.breakers.get("p1/a").state is State.CLOSED == a.breakers.get("p1/a").state:
                break
            await asyncio.sleep(0)
        assert {a.breakers.get("p1/a").state, b.breakers.get("p1/a").state} == {State.CLOSED}
    finally:
        for link in links:
            await link.aclose()


async def test_provider_quota_routes_around_before_the_upstream_says_429() -> None:
    clock = ManualClock()
    p1, p2 = Scripted("p1"), Scripted("p2")
    quota = ProviderQuota(parse_config(CHAIN).providers["p1"].limits, clock=clock)
    router = make_router(p1, p2, clock=clock, quotas={"p1": quota})
    providers = [(await router.chat(dict(REQUEST))).info.provider for _ in range(4)]
    assert providers == ["p1", "p1", "p2", "p2"]  # rpm 2
    clock.now += 30  # half a minute refills one request
    assert (await router.chat(dict(REQUEST))).info.provider == "p1"


async def test_quota_everywhere_exhausted_is_503_with_retry_after() -> None:
    clock = ManualClock()
    p1 = Scripted("p1")
    limits = parse_config({"providers": {"p": {"kind": "openai", "limits": {"rpm": 1}}}})
    quota = ProviderQuota(limits.providers["p"].limits, clock=clock)
    router = make_router(p1, clock=clock, quotas={"p1": quota})
    await router.chat(dict(REQUEST))
    with pytest.raises(ServiceUnavailableError) as info:
        await router.chat(dict(REQUEST))  # p2 is not running in this router
    assert info.value.code == "provider_quota" and info.value.retry_after == 60


async def test_strategies_order_the_candidates() -> None:
    clock = ManualClock()
    p1, p2 = Scripted("p1"), Scripted("p2")
    cheap = make_router(p1, p2, clock=clock, strategy="least-cost")
    assert (await cheap.chat(dict(REQUEST))).info.provider == "p2"

    fast = make_router(p1, p2, clock=clock, strategy="least-latency")
    fast.stats.get("p1/a").observe(0.050, streamed=False)
    fast.stats.get("p2/b").observe(0.200, streamed=False)
    assert (await fast.chat(dict(REQUEST))).info.provider == "p1"
    fast.stats.get("p1/a").observe(0.900, streamed=False)
    fast.stats.get("p1/a").observe(0.900, streamed=False)
    assert (await fast.chat(dict(REQUEST))).info.provider == "p2"

    busy = make_router(p1, p2, clock=clock, strategy="least-busy")
    busy.stats.get("p1/a").in_flight = 3
    assert (await busy.chat(dict(REQUEST))).info.provider == "p2"
    busy.stats.get("p1/a").in_flight = 0
    busy.breakers.mark_down(frozenset({"p1"}))  # the active checks say p1 is down: tried last
    assert (await busy.chat(dict(REQUEST))).info.provider == "p2"


async def test_streams_fail_over_before_the_first_token() -> None:
    clock = ManualClock()
    p1 = Scripted("p1", UpstreamError("refused", provider="p1"))
    p2 = Scripted("p2")
    router = make_router(p1, p2, clock=clock, routing={"retries": 0})
    stream = await router.stream_chat({**REQUEST, "stream": True})
    text = "".join([c["choices"][0]["delta"]["content"] async for c in stream])
    assert text == "p2:b" and stream.info.provider == "p2" and stream.info.fallbacks == 1


async def test_a_stream_that_fails_after_its_first_token_raises_to_the_client() -> None:
    clock = ManualClock()
    p1 = Scripted("p1", "cut")
    p2 = Scripted("p2")
    router = make_router(p1, p2, clock=clock, routing={"retries": 0})
    stream = await router.stream_chat({**REQUEST, "stream": True})
    got = [await stream.__anext__()]
    with pytest.raises(UpstreamError, match="mid-stream"):
        got.append(await stream.__anext__())
    await stream.aclose()
    assert p2.calls == [] and len(got) == 1
    assert router.stats.get("p1/a").failures == 1 and router.stats.get("p1/a").in_flight == 0


async def test_a_stalled_stream_fails_over_before_its_first_token() -> None:
    clock = ManualClock()
    p1 = Scripted("p1", "stall")
    p2 = Scripted("p2")
    router = make_router(p1, p2, clock=clock, routing={"stream_idle_timeout_s": 0.02, "retries": 0})
    stream = await router.stream_chat({**REQUEST, "stream": True})
    assert stream.info.provider == "p2"
    assert router.breakers.get("p1/a").consecutive == 1


async def test_a_stream_that_fails_after_its_role_delta_fails_over_cleanly() -> None:
    clock = ManualClock()
    p1 = Scripted("p1", "role-cut")
    p2 = Scripted("p2", "role")
    router = make_router(p1, p2, clock=clock, routing={"retries": 0})
    stream = await router.stream_chat({**REQUEST, "stream": True})
    got = [c async for c in stream]
    deltas = [c["choices"][0]["delta"] for c in got]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "p2:"}, {"content": "b"}]
    assert stream.info.provider == "p2" and stream.info.fallbacks == 1
    assert router.stats.get("p1/a").failures == 1 and router.breakers.get("p1/a").consecutive == 1
    assert router.stats.get("p2/b").in_flight == 0 and router.stats.get("p2/b").successes == 1


async def test_a_stream_that_stalls_after_its_role_delta_fails_over() -> None:
    clock = ManualClock()
    p1 = Scripted("p1", "role-stall")
    p2 = Scripted("p2")
    router = make_router(p1, p2, clock=clock, routing={"stream_idle_timeout_s": 0.02, "retries": 0})
    stream = await router.stream_chat({**REQUEST, "stream": True})
    assert [c["choices"][0]["delta"]["content"] async for c in stream] == ["p2:", "b"]
    assert stream.info.provider == "p2"


async def test_the_time_to_first_token_is_taken_at_the_first_content() -> None:
    clock = ManualClock()
    p3 = Scripted("p3")

    async def slow_to_speak(request: Body, model: str) -> AsyncGenerator[Body, None]:
        yield dict(ROLE)
        clock.now += 0.25  # the model thinks after its role delta
        yield chunk("hi")

    p3.stream_chat = slow_to_speak  # type: ignore[method-assign]
    router = make_router(p3, clock=clock)
    stream = await router.stream_chat({**REQUEST, "model": "solo", "stream": True})
    assert [c["choices"][0]["delta"].get("content") async for c in stream] == ["", "hi"]
    assert router.stats.get("p3/c").ttft_s == pytest.approx(0.25)


async def test_a_stream_of_only_a_role_delta_is_answered_as_it_is() -> None:
    clock = ManualClock()
    p3 = Scripted("p3")

    async def says_nothing(request: Body, model: str) -> AsyncGenerator[Body, None]:
        yield dict(ROLE)

    p3.stream_chat = says_nothing  # type: ignore[method-assign]
    router = make_router(p3, clock=clock)
    stream = await router.stream_chat({**REQUEST, "model": "solo", "stream": True})
    assert [c async for c in stream] == [ROLE]
    assert router.stats.get("p3/c").in_flight == 0 and router.stats.get("p3/c").successes == 1


def delta_chunk(delta: dict[str, Any] | None = None, **choice: Any) -> Body:
    if delta is not None:
        choice["delta"] = delta
    return {"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, **choice}]}


@pytest.mark.parametrize(
    ("item", "content"),
    [
        (ROLE, False),
        (delta_chunk({"role": "assistant"}), False),
        (delta_chunk({"content": None, "tool_calls": []}, finish_reason=None), False),
        ({"id": "x", "choices": [], "prompt_filter_results": []}, False),
        (delta_chunk({"content": "hi"}), True),
        (delta_chunk({"role": "assistant", "content": "hi"}), True),
        (delta_chunk({"tool_calls": [{"index": 0, "id": "call_1"}]}), True),
        (delta_chunk({"function_call": {"name": "f"}}), True),
        (delta_chunk({"refusal": "no"}), True),
        (delta_chunk({"reasoning_content": "hmm"}), True),
        (delta_chunk({}, finish_reason="stop"), True),
        (delta_chunk(text="", finish_reason=None), False),
        (delta_chunk(text="once"), True),
        ({"id": "x", "choices": [], "usage": {"total_tokens": 3}}, True),
        ({"id": "x", "something": "else"}, True),
    ],
)
def test_which_chunks_carry_content(item: Body, content: bool) -> None:
    from noa.routing.results import carries_content

    assert carries_content(item) is content


async def test_cancelling_a_call_releases_everything() -> None:
    clock = ManualClock()
    started = asyncio.Event()
    p3 = Scripted("p3")

    async def hang(request: Body, model: str) -> Body:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError

    p3.chat = hang  # type: ignore[method-assign]
    router = make_router(p3, clock=clock)
    task = asyncio.ensure_future(router.chat({**REQUEST, "model": "solo"}))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = router.stats.get("p3/c")
    assert stats.in_flight == 0 and stats.failures == 0
    assert router.breakers.get("p3/c").consecutive == 0


async def test_stop_tasks_ends_a_loop_that_swallowed_its_cancellation() -> None:
    """A loop whose library ate the first cancel (redis-py's get_message can) still ends."""
    swallowed = []

    async def loop() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if not swallowed:  # the first cancel is lost in a library
                    swallowed.append(True)
                    current = asyncio.current_task()
                    assert current is not None
                    current.uncancel()
                    continue
                raise

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_tasks([task], again_s=0.01), 5)
    assert swallowed and task.cancelled()
