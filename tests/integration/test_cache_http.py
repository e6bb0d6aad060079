"""The response cache over HTTP (uvicorn on loopback, no Ray) with its real tiers: L1 in each
server, L2 in Redis, L3 in PostgreSQL, as two gateway replicas would share them.

Every test uses prompts of its own, so entries never leak between tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from test_cache_stores import PrivateRedis

from noa.build.gateway import inprocess_service
from noa.config import parse_config
from noa.http.app import create_app
from noa.testing.fake_upstream import FakeUpstream, Step
from noa.testing.server import ServerThread

KEY = "noa-cache-test-key"


def service_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite through ./scripts/test.sh")
    return value


class Gateway:
    """One NOA server (one 'replica'): its own L1, the given L2 and L3."""

    def __init__(self, upstream_env: dict[str, str], **cache: Any) -> None:
        config = parse_config(
            {
                "routing": {"retries": 0},
                "providers": {"openai": {"kind": "openai", "max_retries": 0}},
                "models": [{"id": "gpt", "provider": "openai", "upstream": "gpt-4o-mini"}],
                "cache": cache,
            }
        )
        self.service = inprocess_service(config, upstream_env)
        self.server = ServerThread(create_app(self.service, master_key=KEY)).start()
        self.http = httpx.Client(
            base_url=self.server.base_url, headers={"authorization": f"Bearer {KEY}"}, timeout=30
        )

    def chat(
        self, text: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> httpx.Response:
        body = {"model": "gpt", "messages": [{"role": "user", "content": text}], "temperature": 0}
        response = self.http.post("/v1/chat/completions", json=body | extra, headers=headers)
        self.settle()
        return response

    def settle(self) -> None:
        """Entries are stored off the hot path: wait for them before the next request."""
        assert self.service.cache is not None
        self.server.run(self.service.cache.drain())

    def stream(self, text: str) -> list[dict[str, Any]]:
        body = {
            "model": "gpt",
            "messages": [{"role": "user", "content": text}],
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        events = []
        with self.http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            self.last_cache = response.headers["x-noa-cache"]
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    events.append(json.loads(line[6:]))
        self.settle()
        return events

    def close(self) -> None:
        self.http.close()
        self.server.stop()


@pytest.fixture
def env(upstream_env: dict[str, str], fake: FakeUpstream) -> dict[str, str]:
    return upstream_env | {
        "NOA_REDIS_URL": service_env("NOA_TEST_REDIS_URL"),
        "NOA_DATABASE_URL": service_env("NOA_TEST_POSTGRES_DSN"),
    }


@pytest.fixture
def gateways(env: dict[str, str]) -> Iterator[list[Gateway]]:
    """Two replicas sharing Redis and PostgreSQL, and one with no L2 (Redis off)."""
    made = [Gateway(env), Gateway(env), Gateway(env, shared={"enabled": False})]
    yield made
    for gateway in made:
        gateway.close()


def prompt() -> str:
    return f"cache test {uuid.uuid4().hex}"


def test_miss_then_hits_from_each_tier(gateways: list[Gateway], fake: FakeUpstream) -> None:
    a, b, no_l2 = gateways
    text = prompt()
    first = a.chat(text)
    assert first.status_code == 200 and first.headers["x-noa-cache"] == "miss"
    assert a.chat(text).headers["x-noa-cache"] == "hit-l1"
    from_redis = b.chat(text)  # the other replica: not in its L1, in the shared Redis
    assert from_redis.headers["x-noa-cache"] == "hit-l2"
    assert b.chat(text).headers["x-noa-cache"] == "hit-l1"  # back-filled
    from_sql = no_l2.chat(text)
    assert from_sql.headers["x-noa-cache"] == "hit-l3"
    assert from_redis.json() == first.json() == from_sql.json()
    assert from_sql.headers["x-noa-provider"] == "openai"
    assert len(fake.requests) == 1


def test_bypass_refresh_and_a_bad_policy(gateways: list[Gateway], fake: FakeUpstream) -> None:
    a = gateways[0]
    text = prompt()
    a.chat(text)
    assert a.chat(text, {"x-noa-cache": "bypass"}).headers["x-noa-cache"] == "bypass"
    assert a.chat(text, {"x-noa-cache": "refresh"}).headers["x-noa-cache"] == "miss"
    bad = a.chat(text, {"x-noa-cache": "maybe"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_cache_policy"
    body_field = a.chat(text, noa_cache="bypass")
    assert body_field.headers["x-noa-cache"] == "bypass"
    assert len(fake.requests) == 4  # miss, bypass, refresh, bypass
    assert all("noa_cache" not in r.body for r in fake.requests)


def test_nondeterministic_requests_are_not_cached(
    gateways: list[Gateway], fake: FakeUpstream
) -> None:
    a = gateways[0]
    text = prompt()
    for _ in range(2):
        assert a.chat(text, temperature=0.7).headers["x-noa-cache"] == "bypass"
    assert a.chat(text, temperature=0.7, seed=4).headers["x-noa-cache"] == "miss"
    assert len(fake.requests) == 3


def test_a_stream_is_replayed_equal_to_the_original_from_every_tier(
    gateways: list[Gateway], fake: FakeUpstream
) -> None:
    a, b, no_l2 = gateways
    text = prompt() + " with several words to stream"
    original = a.stream(text)
    assert a.last_cache == "miss" and len(original) > 3
    for gateway, tier in ((a, "hit-l1"), (b, "hit-l2"), (no_l2, "hit-l3")):
        assert gateway.stream(text) == original
        assert gateway.last_cache == tier
    plain = a.chat(text)  # a non-streaming request is served from the stream's entry
    content = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in original if e["choices"]
    )
    assert plain.json()["choices"][0]["message"]["content"] == content
    assert len(fake.requests) == 1


def test_a_stream_cut_before_its_end_is_not_stored(
    gateways: list[Gateway], fake: FakeUpstream
) -> None:
    a = gateways[0]
    text = prompt() + " one two three four"
    fake.script.append(Step(cut_after=2))
    events = a.stream(text)
    assert events[-1].get("error") is not None  # the client saw the failure
    again = a.stream(text)
    assert a.last_cache == "miss" and again[-1]["usage"]
    assert len(fake.requests) == 2


def test_concurrent_identical_requests_make_one_upstream_call(
    gateways: list[Gateway], fake: FakeUpstream
) -> None:
    a = gateways[0]
    text = prompt()
    fake.always = Step(delay_s=0.3)  # all twenty arrive while the first is upstream
    body = {"model": "gpt", "messages": [{"role": "user", "content": text}], "temperature": 0}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=a.server.base_url, headers={"authorization": f"Bearer {KEY}"}, timeout=30
        ) as client:
            return await asyncio.gather(
                *(client.post("/v1/chat/completions", json=body) for _ in range(20))
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.json()["choices"][0]["message"]["content"] for r in responses}) == 1
    assert len(fake.requests) == 1


def test_identical_requests_on_two_replicas_make_one_upstream_call(
    gateways: list[Gateway], fake: FakeUpstream
) -> None:
    """The replicas' first misses meet at Redis: one holds the key's lease and goes upstream,
    the other waits for its entry."""
    a, b = gateways[0], gateways[1]
    text = prompt()
    fake.always = Step(delay_s=0.3)
    body = {"model": "gpt", "messages": [{"role": "user", "content": text}], "temperature": 0}

    async def burst() -> list[httpx.Response]:
        auth = {"authorization": f"Bearer {KEY}"}
        async with (
            httpx.AsyncClient(base_url=a.server.base_url, headers=auth, timeout=30) as ca,
            httpx.AsyncClient(base_url=b.server.base_url, headers=auth, timeout=30) as cb,
        ):
            calls = [c.post("/v1/chat/completions", json=body) for c in (ca, cb) * 10]
            return await asyncio.gather(*calls)

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.json()["choices"][0]["message"]["content"] for r in responses}) == 1
    # one request made the call; the others answered from it (no call of their own)
    labels = sorted(r.headers["x-noa-cache"] for r in responses)
    assert labels == ["hit-flight"] * 19 + ["miss"]
    assert [r.body["messages"][0]["content"] for r in fake.requests].count(text) == 1
    flights = [g.service.cache.stats()["flights"] for g in (a, b) if g.service.cache]
    assert sorted(f["led"] for f in flights) == [0, 1]
    assert sorted(f["joined"] for f in flights) == [0, 1]


def test_redis_killed_mid_test_requests_still_succeed(
    upstream_env: dict[str, str], fake: FakeUpstream, tmp_path: Any
) -> None:
    redis_server = PrivateRedis(tmp_path)
    env = upstream_env | {
        "NOA_REDIS_URL": redis_server.url,
        "NOA_DATABASE_URL": service_env("NOA_TEST_POSTGRES_DSN"),
    }
    gateways: list[Gateway] = []
    try:
        a, b = Gateway(env), Gateway(env)
        gateways += [a, b]
        before = prompt()
        assert a.chat(before).headers["x-noa-cache"] == "miss"
        assert b.chat(before).headers["x-noa-cache"] == "hit-l2"
        redis_server.kill()
        after = prompt()
        answers = [a.chat(after), b.chat(after), b.chat(before), a.chat(prompt())]
        assert [r.status_code for r in answers] == [200] * 4
        assert [r.headers["x-noa-cache"] for r in answers] == ["miss", "hit-l3", "hit-l1", "miss"]
        assert b.service.cache is not None
        assert b.service.cache.stats()["tiers"]["l2"]["errors"] >= 1
    finally:
        redis_server.kill()  # even when a gateway failed to start
        for gateway in gateways:
            gateway.close()
