"""The response cache around the router: policy, tenants, hits and stores, stream replay,
single flight and size bounds, over in-memory tiers and a scripted router (no network)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from planned import ask

from noa.access.identity import Principal
from noa.cache.memory import MemoryTier, TtlLru
from noa.cache.response import ResponseCache
from noa.cache.tiers import TieredCache
from noa.config import CacheConfig, parse_config
from noa.errors import InvalidRequestError, UpstreamError
from noa.routing.plan import Plan
from noa.routing.registry import ModelRegistry, ProviderInfo
from noa.routing.results import PrimedStream, Routed, RouteInfo
from noa.service import NoaService, client_chunks
from noa.wire.operations import Operation
from noa.wire.requests import ChatCompletionRequest, EmbeddingRequest

Body = dict[str, Any]
INFO = RouteInfo("m", "openai", "gpt-x")
TEAM_A, TEAM_B = Principal("key", "key_a", team="a"), Principal("key", "key_b", team="b")


def answer(text: str) -> Body:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 7,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def chunks_of(text: str) -> list[Body]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m"}
    words = text.split(" ")
    first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    out = [{**base, "choices": [first]}]
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        out.append(
            {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        )
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    out.append({**base, "choices": [], "usage": answer(text)["usage"]})
    return out


class FakeRouter:
    """Answers "echo: <last message>"; counts calls; ``gate`` holds every call until set;
    ``failures`` calls raise first; ``cut`` makes streams fail after one chunk."""

    def __init__(self) -> None:
        self.calls: list[Body] = []
        self.gate: asyncio.Event | None = None
        self.failures = 0
        self.cut = False

    async def _begin(self, request: Body) -> str:
        self.calls.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if self.failures > 0:
            self.failures -= 1
            raise UpstreamError("upstream down", provider="openai")
        return "echo: " + str(request["messages"][-1]["content"])

    async def route(self, plan: Plan) -> Routed | PrimedStream:
        if plan.operation is Operation.EMBEDDINGS:
            return await self.embeddings(plan.body)
        return await (self.stream_chat if plan.stream else self.chat)(plan.body)

    async def chat(self, request: Body) -> Routed:
        return Routed(answer(await self._begin(request)), INFO)

    async def stream_chat(self, request: Body) -> PrimedStream:
        chunks = chunks_of(await self._begin(request))
        cut = self.cut

        async def rest() -> AsyncGenerator[Body, None]:
            for i, item in enumerate(chunks[1:]):
                if cut and i == 1:
                    raise UpstreamError("cut mid-stream", provider="openai")
                yield item

        return PrimedStream(INFO, [chunks[0]], rest(), None)

    async def embeddings(self, request: Body) -> Routed:
        await self._begin({"messages": [{"content": request["input"]}]})
        body = {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
            "model": "m",
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }
        return Routed(body, INFO)


def registry(**model: Any) -> ModelRegistry:
    config = parse_config(
        {
            "models": [
                {"id": "m", "provider": "openai", "upstream": "gpt-x", "aliases": ["m-alias"]}
                | model,
                {"id": "shared", "provider": "openai", "upstream": "gpt-y", "cache_shared": True},
                {"id": "never", "provider": "openai", "upstream": "gpt-z", "cache": "bypass"},
            ],
        }
    )
    infos = [ProviderInfo("openai", "openai", True)]
    return ModelRegistry(config.models, infos, {}, config.routing)


def make(settings: dict[str, Any] | None = None, **model: Any) -> tuple[NoaService, FakeRouter]:
    config = CacheConfig.model_validate(settings or {})
    models = registry(**model)
    tiers = TieredCache([MemoryTier(TtlLru(100, 60), 60)], [60])
    router = FakeRouter()
    return NoaService(router, models, ResponseCache(tiers, config)), router


def chat(text: str = "hi", **extra: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": text}], "temperature": 0}
    return ChatCompletionRequest.model_validate({**body, **extra})


async def settled(service: NoaService) -> None:
    assert service.cache is not None
    await service.cache.drain()


async def drained(stream: PrimedStream, usage: bool = True) -> list[Body]:
    return [c async for c in client_chunks(stream, usage)]


async def test_miss_then_hit_from_l1_with_the_original_route() -> None:
    service, router = make()
    first = await ask(service, chat())
    assert isinstance(first, Routed) and first.info.cache == "miss"
    await settled(service)
    second = await ask(service, chat())
    assert isinstance(second, Routed)
    assert second.info.cache == "hit-l1"
    assert second.body == first.body
    assert (second.info.provider, second.info.upstream, second.info.attempts) == (
        "openai",
        "gpt-x",
        0,
    )
    assert second.info.headers()["x-noa-cache"] == "hit-l1"
    assert len(router.calls) == 1


async def test_an_alias_and_the_model_share_entries_and_ignored_fields_do_not_split() -> None:
    service, router = make()
    await ask(service, chat(user="a", stream_options=None))
    await settled(service)
    again = await ask(
        service,
        ChatCompletionRequest.model_validate(
            {
                "model": "m-alias",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "temperature": 0.0,
                "user": "b",
            }
        ),
    )
    assert isinstance(again, Routed) and again.info.cache == "hit-l1"
    assert len(router.calls) == 1


async def test_answer_changing_parameters_miss() -> None:
    service, router = make()
    await ask(service, chat())
    await settled(service)
    for extra in ({"max_tokens": 5}, {"stop": ["x"]}, {"seed": 3}, {"top_p": 0.5}):
        result = await ask(service, chat(**extra))
        assert isinstance(result, Routed) and result.info.cache == "miss", extra
    assert len(router.calls) == 5


async def test_nondeterministic_requests_bypass_unless_asked() -> None:
    service, router = make()
    loose = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(2):
        result = await ask(service, ChatCompletionRequest.model_validate(loose))
        assert isinstance(result, Routed) and result.info.cache == "bypass"
    await settled(service)
    assert len(router.calls) == 2
    asked = await ask(service, ChatCompletionRequest.model_validate(loose), "use")
    assert isinstance(asked, Routed) and asked.info.cache == "miss"
    await settled(service)
    hit = await ask(service, ChatCompletionRequest.model_validate({**loose, "noa_cache": "use"}))
    assert isinstance(hit, Routed) and hit.info.cache == "hit-l1"


async def test_nondeterministic_cached_when_the_config_says_so() -> None:
    service, _router = make({"nondeterministic": True})
    loose = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.9}
    )
    await ask(service, loose)
    await settled(service)
    result = await ask(service, loose)
    assert isinstance(result, Routed) and result.info.cache == "hit-l1"


async def test_bypass_and_refresh() -> None:
    service, router = make()
    await ask(service, chat())
    await settled(service)
    bypassed = await ask(service, chat(), "bypass")
    assert isinstance(bypassed, Routed) and bypassed.info.cache == "bypass"
    refreshed = await ask(service, chat(), "refresh")
    assert isinstance(refreshed, Routed) and refreshed.info.cache == "miss"
    assert len(router.calls) == 3
    await settled(service)
    hit = await ask(service, chat())
    assert isinstance(hit, Routed) and hit.info.cache == "hit-l1"


async def test_model_policy_and_global_default() -> None:
    service, _router = make()
    never = chat(model="never")
    for _ in range(2):
        result = await ask(service, never)
        assert isinstance(result, Routed) and result.info.cache == "bypass"
    forced = await ask(service, never, "use")  # the request is more specific than the model
    assert isinstance(forced, Routed) and forced.info.cache == "miss"

    off, _ = make({"default": "bypass"})
    result = await ask(off, chat())
    assert isinstance(result, Routed) and result.info.cache == "bypass"
    on_model, _ = make({"default": "bypass"}, cache="use")
    result = await ask(on_model, chat())
    assert isinstance(result, Routed) and result.info.cache == "miss"


async def test_disabled_cache_is_bypass_for_every_request() -> None:
    service, router = make({"enabled": False})
    for policy in (None, "use", "refresh"):
        result = await ask(service, chat(), policy)
        assert isinstance(result, Routed) and result.info.cache == "bypass"
    assert len(router.calls) == 3


async def test_invalid_policy_is_a_400_naming_the_field() -> None:
    service, router = make()
    with pytest.raises(InvalidRequestError) as header:
        await ask(service, chat(), "sometimes")
    assert header.value.status_code == 400 and "use, bypass, refresh" in header.value.message
    with pytest.raises(InvalidRequestError) as body:
        await ask(service, chat(noa_cache="always"))
    assert body.value.param == "noa_cache"
    assert router.calls == []


async def test_the_body_field_never_goes_upstream() -> None:
    service, router = make()
    await ask(service, chat(noa_cache="refresh"))
    assert "noa_cache" not in router.calls[0]


async def test_tenants_are_scoped_unless_the_model_is_shared() -> None:
    service, _router = make()
    await ask(service, chat(), None, TEAM_A)
    await settled(service)
    other = await ask(service, chat(), None, TEAM_B)
    assert isinstance(other, Routed) and other.info.cache == "miss"
    await settled(service)
    same = await ask(service, chat(), None, TEAM_A)
    assert isinstance(same, Routed) and same.info.cache == "hit-l1"

    await ask(service, chat(model="shared"), None, TEAM_A)
    await settled(service)
    shared = await ask(service, chat(model="shared"), None, TEAM_B)
    assert isinstance(shared, Routed) and shared.info.cache == "hit-l1"


async def test_a_streamed_answer_is_stored_once_complete_and_replayed_equal() -> None:
    service, router = make()
    original = await ask(service, chat("one two three", stream=True))
    assert isinstance(original, PrimedStream) and original.info.cache == "miss"
    first = await drained(original)
    await settled(service)

    replayed = await ask(service, chat("one two three", stream=True))
    assert isinstance(replayed, PrimedStream) and replayed.info.cache == "hit-l1"
    assert await drained(replayed) == first
    assert len(router.calls) == 1

    plain = await ask(service, chat("one two three"))  # the same entry, assembled
    assert isinstance(plain, Routed) and plain.info.cache == "hit-l1"
    assert plain.body["choices"][0]["message"]["content"] == "echo: one two three"
    assert plain.body["usage"] == first[-1]["usage"]


async def test_a_plain_answer_is_replayed_as_a_stream() -> None:
    service, _router = make()
    plain = await ask(service, chat("a b"))
    assert isinstance(plain, Routed)
    await settled(service)
    streamed = await ask(service, chat("a b", stream=True))
    assert isinstance(streamed, PrimedStream) and streamed.info.cache == "hit-l1"
    chunks = await drained(streamed, usage=False)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: a b"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)  # not asked for: left out as upstream does


async def test_a_stream_cut_midway_or_abandoned_is_never_stored() -> None:
    service, router = make()
    router.cut = True
    cut = await ask(service, chat("x y z", stream=True))
    assert isinstance(cut, PrimedStream)
    with pytest.raises(UpstreamError):
        await drained(cut)
    router.cut = False
    abandoned = await ask(service, chat("x y z", stream=True))
    assert isinstance(abandoned, PrimedStream)
    await abandoned.__anext__()
    await abandoned.aclose()  # the client went away
    await settled(service)
    again = await ask(service, chat("x y z", stream=True))
    assert isinstance(again, PrimedStream) and again.info.cache == "miss"
    assert len(router.calls) == 3


async def test_concurrent_identical_misses_make_one_upstream_call() -> None:
    service, router = make()
    router.gate = asyncio.Event()
    waiting = [asyncio.ensure_future(ask(service, chat("same"))) for _ in range(20)]
    await asyncio.sleep(0.01)
    router.gate.set()
    results = await asyncio.gather(*waiting)
    assert len(router.calls) == 1
    assert {r.body["choices"][0]["message"]["content"] for r in results} == {"echo: same"}
    assert sorted(r.info.cache for r in results) == ["hit-flight"] * 19 + ["miss"]
    assert service.cache is not None and service.cache.counts["shared"] == 19


async def test_concurrent_identical_streams_share_one_call_and_replay_equal() -> None:
    service, router = make()
    router.gate = asyncio.Event()
    streams = [asyncio.ensure_future(ask(service, chat("s t", stream=True))) for _ in range(5)]
    await asyncio.sleep(0.01)
    router.gate.set()
    first = await streams[0]
    assert isinstance(first, PrimedStream)
    leader = await drained(first)
    for other in streams[1:]:
        result = await other
        assert isinstance(result, PrimedStream)
        assert await drained(result) == leader
    assert len(router.calls) == 1


async def test_a_failed_flight_sends_its_waiters_upstream_themselves() -> None:
    service, router = make()
    router.gate = asyncio.Event()
    router.failures = 1
    leader = asyncio.ensure_future(ask(service, chat("f")))
    await asyncio.sleep(0.01)
    followers = [asyncio.ensure_future(ask(service, chat("f"))) for _ in range(3)]
    await asyncio.sleep(0.01)
    router.gate.set()
    with pytest.raises(UpstreamError):
        await leader
    results = await asyncio.gather(*followers)
    assert all(isinstance(r, Routed) for r in results)
    assert len(router.calls) == 4


async def test_answers_over_the_size_bound_are_not_stored() -> None:
    service, _router = make({"max_entry_bytes": 64})
    await ask(service, chat())
    await settled(service)
    again = await ask(service, chat())
    assert isinstance(again, Routed) and again.info.cache == "miss"
    assert service.cache is not None and service.cache.counts["too_large"] == 2


async def test_embeddings_are_cached_without_a_temperature() -> None:
    service, router = make()
    request = EmbeddingRequest.model_validate({"model": "m", "input": "text"})
    await ask(service, request)
    await settled(service)
    hit = await ask(service, request)
    assert hit.info.cache == "hit-l1" and hit.body["data"][0]["embedding"] == [0.5, 0.25]
    assert len(router.calls) == 1


async def test_stats_count_answers_and_tiers() -> None:
    service, _router = make()
    await ask(service, chat())
    await settled(service)
    await ask(service, chat())
    await ask(service, chat(), "bypass")
    assert service.cache is not None
    stats = service.cache.stats()
    assert stats["answers"]["miss"] == 1 and stats["answers"]["bypass"] == 1
    assert stats["tiers"]["l1"] == {
        "hits": 1,
        "misses": 1,
        "errors": 0,
        "skipped": 0,
        "down": False,
    }
