"""Fallback, retries, breakers, deadlines and streaming failover through NOA's real HTTP app,
against fake upstreams on loopback scripted to fail (counted at the fake upstream)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from noa.build import providers, routing
from noa.config import parse_config
from noa.http.app import create_app
from noa.routing.breakers.board import State
from noa.routing.router import Router
from noa.service import NoaService
from noa.testing.fake_upstream import FakeUpstream, Step
from noa.testing.server import ServerThread

KEY = "routing-master-key"
MSG = [{"role": "user", "content": "hello world"}]
COOLDOWN_S = 30.0


@pytest.fixture(scope="module")
def primary(upstream_key: str) -> Iterator[FakeUpstream]:
    fake = FakeUpstream(api_key=upstream_key).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def backup(upstream_key: str) -> Iterator[FakeUpstream]:
    fake = FakeUpstream(api_key=upstream_key).start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def clean(primary: FakeUpstream, backup: FakeUpstream, noa: tuple[str, Router]) -> None:
    primary.reset()
    backup.reset()
    noa[1].breakers.reset()  # each test starts with closed breakers


@pytest.fixture(scope="module")
def noa(
    primary: FakeUpstream, backup: FakeUpstream, upstream_key: str
) -> Iterator[tuple[str, Router]]:
    config = parse_config(
        {
            "providers": {
                "primary": {"kind": "openai", "base_url": f"{primary.base_url}/v1", "timeout_s": 2},
                "backup": {"kind": "openai", "base_url": f"{backup.base_url}/v1"},
                "claude": {"kind": "anthropic", "base_url": backup.base_url},
            },
            "models": [
                {
                    "id": "resilient",
                    "chain": [
                        {"provider": "primary", "upstream": "gpt-a"},
                        {"provider": "backup", "upstream": "gpt-b"},
                    ],
                },
                {
                    "id": "mixed",
                    "chain": [
                        {"provider": "primary", "upstream": "gpt-a"},
                        {"provider": "claude", "upstream": "claude-b"},
                    ],
                },
                {"id": "lonely", "provider": "primary", "upstream": "gpt-a"},
            ],
            "routing": {
                "retries": 1,
                "backoff_base_s": 0.01,
                "deadline_s": 3,
                "stream_idle_timeout_s": 0.5,
                "breaker": {"cooldown_s": COOLDOWN_S},
            },
        }
    )
    env = {"OPENAI_API_KEY": upstream_key, "ANTHROPIC_API_KEY": upstream_key}
    router = routing.router(config, providers.cloud_providers(config, env))
    service = NoaService(router, routing.registry(config, env))
    server = ServerThread(create_app(service, master_key=KEY)).start()
    yield server.base_url, router
    server.stop()


@pytest.fixture(scope="module")
def http(noa: tuple[str, Router]) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=noa[0], headers={"authorization": f"Bearer {KEY}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture(scope="module")
def client(noa: tuple[str, Router]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{noa[0]}/v1", api_key=KEY, max_retries=0, timeout=30)


def chat(http: httpx.Client, model: str = "resilient", **extra: Any) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": model, "messages": MSG, **extra})


def test_a_failing_provider_is_retried_then_the_next_answers(
    http: httpx.Client, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script.extend([Step(status=500), Step(status=502)])
    response = chat(http)
    assert response.status_code == 200, response.text
    assert response.headers["x-noa-provider"] == "backup"
    assert response.headers["x-noa-model"] == "resilient"
    assert response.headers["x-noa-attempts"] == "3"
    assert response.headers["x-noa-fallbacks"] == "1"
    assert [r.body["model"] for r in primary.requests] == ["gpt-a", "gpt-a"]
    assert [r.body["model"] for r in backup.requests] == ["gpt-b"]


def test_a_chain_can_fall_back_across_provider_kinds(
    http: httpx.Client, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.always = Step(status=503)
    response = chat(http, "mixed")
    assert response.status_code == 200, response.text
    assert response.headers["x-noa-provider"] == "claude"
    assert response.json()["choices"][0]["message"]["content"] == "echo: hello world"
    assert backup.paths() == ["/v1/messages"]


def test_the_clients_own_errors_never_fall_back(
    http: httpx.Client, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    for status in (400, 404, 413, 422):
        primary.script.append(Step(status=status))
        response = chat(http)
        assert response.status_code in (400, 404, 413), response.text
    assert len(primary.requests) == 4 and backup.requests == []


def test_upstream_429_honours_a_short_retry_after_and_skips_a_long_one(
    http: httpx.Client, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script.append(Step(status=429, headers={"retry-after": "0.2"}))
    response = chat(http)
    assert response.headers["x-noa-provider"] == "primary"
    assert response.headers["x-noa-attempts"] == "2"

    primary.script.append(Step(status=429, headers={"retry-after": "120"}))
    response = chat(http)
    assert response.headers["x-noa-provider"] == "backup"
    assert len(primary.requests) == 3  # no retry behind a 2-minute Retry-After


def test_malformed_replies_fall_back(
    http: httpx.Client, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.always = Step(raw=b'{"choices": [oops')
    response = chat(http)
    assert response.status_code == 200 and response.headers["x-noa-provider"] == "backup"


def test_slow_answers_time_out_and_fall_back(
    http: httpx.Client, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.always = Step(delay_s=2.5)  # over the provider's timeout_s of 2
    response = chat(http, max_tokens=5)
    assert response.status_code == 200 and response.headers["x-noa-provider"] == "backup"


def test_the_deadline_bounds_the_whole_chain(http: httpx.Client, primary: FakeUpstream) -> None:
    # the first try fails after 1.3 s (well within the provider's 2 s timeout); the second would
    # take 10 s, so the chain's 3 s deadline cuts it at ~1.7 s, before that provider's own
    # timeout (2 s) would: margins of 0.3 s and more on every side, however loaded the machine
    primary.script.append(Step(status=500, delay_s=1.3))
    primary.always = Step(status=500, delay_s=10)
    response = chat(http, "lonely")
    assert response.status_code == 504, response.text
    error = response.json()["error"]
    assert error["code"] == "deadline_exceeded" and error["type"] == "timeout_error"
    assert "gpt-a" in error["message"]
    for _ in range(100):  # NOA hung up on the second try when the deadline came
        if primary.disconnects:
            break
        time.sleep(0.05)
    assert [r.disconnected for r in primary.requests] == [False, True]


def test_when_every_provider_fails_each_reason_is_given(
    http: httpx.Client, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.always = Step(status=500)
    backup.always = Step(status=503)
    response = chat(http)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "all_providers_failed"
    assert "primary/gpt-a: scripted 500" in error["message"]
    assert "backup/gpt-b: scripted 503" in error["message"]
    assert error["correlation_id"] == response.headers["x-correlation-id"]


def test_a_stream_that_fails_before_its_first_token_is_replaced_invisibly(
    client: openai.OpenAI, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.always = Step(status=503)
    raw = client.chat.completions.with_raw_response.create(
        model="resilient", messages=MSG, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "echo: hello world" and raw.headers["x-noa-provider"] == "backup"

    primary.always = Step(stall_s=3)  # headers at once, then silence past the idle timeout
    stream = client.chat.completions.create(model="resilient", messages=MSG, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text


def test_a_stream_cut_after_its_first_token_ends_with_an_error_event(
    http: httpx.Client, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script.append(Step(cut_after=2))
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "resilient", "messages": MSG, "stream": True},
    ) as response:
        events = [line for line in response.iter_lines() if line.startswith("data:")]
    assert response.headers["x-noa-provider"] == "primary"
    assert '"error"' in events[-1] and "data: [DONE]" not in events
    assert backup.requests == []  # after the first token there is no going back


def test_a_stream_that_stalls_after_its_first_token_ends_with_an_error_event(
    http: httpx.Client, primary: FakeUpstream
) -> None:
    gate = threading.Event()
    primary.script.append(Step(gate=gate))
    try:
        with http.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "lonely", "messages": MSG, "stream": True},
        ) as response:
            events = [line for line in response.iter_lines() if line.startswith("data:")]
        assert "stream_stalled" in events[-1]
    finally:
        gate.set()


def test_a_client_that_disconnects_cancels_the_upstream_call(
    noa: tuple[str, Router], primary: FakeUpstream
) -> None:
    primary.always = Step(delay_s=2.5)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{noa[0]}/v1/chat/completions",
            json={"model": "lonely", "messages": MSG},
            headers={"authorization": f"Bearer {KEY}"},
            timeout=0.5,
        )
    for _ in range(100):
        if primary.disconnects:
            break
        time.sleep(0.02)
    assert primary.disconnects == 1  # the upstream saw NOA hang up: no tokens for nobody
    assert len(primary.requests) == 1


async def _many(url: str, n: int, concurrency: int) -> list[int]:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers={"authorization": f"Bearer {KEY}"}, limits=limits, timeout=60
    ) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> int:
            async with gate:
                response = await client.post(
                    "/v1/chat/completions", json={"model": "resilient", "messages": MSG}
                )
                return response.status_code

        return list(await asyncio.gather(*(one() for _ in range(n))))


def test_a_dead_provider_costs_nothing_once_its_breaker_is_open(
    noa: tuple[str, Router], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    url, router = noa
    primary.always = Step(status=500)
    started = time.monotonic()
    statuses = asyncio.run(_many(url, 100, 32))
    assert router.breakers.get("primary/gpt-a").state is State.OPEN
    before = len(primary.requests)
    statuses += asyncio.run(_many(url, 900, 32))
    assert statuses == [200] * 1000
    probes = 1 + int((time.monotonic() - started) / COOLDOWN_S)
    assert len(primary.requests) - before <= probes
    assert len(backup.requests) == 1000
