"""Proxies from the environment: an upstream that HTTP(S)_PROXY / ALL_PROXY sends through a proxy
goes through the SDK's HTTP stack, which honours it (NOA's direct transport has no proxy
support), and NO_PROXY exempts it; checked against a loopback proxy and upstream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import openai
import pytest
from scripted_http import Server, answer

from noa.config.providers import OpenAIProviderConfig
from noa.providers import transport
from noa.providers.transport import DirectTransport, SdkTransport

REPLY = b'{"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": []}'
VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


async def json_reply(request: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
    w.write(answer(REPLY, b"Content-Type: application/json\r\n"))
    await w.drain()
    return True


@pytest.fixture
async def proxy_and_upstream(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[Server, Server]]:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    proxy = await Server(json_reply).start()
    upstream = await Server(json_reply).start()
    yield proxy, upstream
    await proxy.stop()
    await upstream.stop()


def built(upstream: Server, **config: str) -> transport.Transport:
    return transport.from_config(
        "openai",
        openai,
        openai.AsyncOpenAI,
        OpenAIProviderConfig(**config),  # type: ignore[arg-type]
        "sk-test",
        f"http://127.0.0.1:{upstream.port}/v1",
    )


async def test_a_proxied_upstream_goes_through_the_sdk_and_its_proxy(
    proxy_and_upstream: tuple[Server, Server],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy, upstream = proxy_and_upstream
    monkeypatch.setenv("HTTP_PROXY", f"http://user:secret@127.0.0.1:{proxy.port}")
    with caplog.at_level(logging.INFO, "noa.providers"):
        chosen = built(upstream)
    assert isinstance(chosen, SdkTransport)
    assert (await chosen.post_json("/chat/completions", {"model": "m"}))["id"] == "c"
    await chosen.aclose()
    (line,) = proxy.requests
    target = f"POST http://127.0.0.1:{upstream.port}/v1/chat/completions HTTP/1.1"
    assert line.startswith(target.encode()) and upstream.requests == []
    (said,) = [r.getMessage() for r in caplog.records if r.name == "noa.providers"]
    assert f"http://127.0.0.1:{proxy.port}" in said and "secret" not in said


@pytest.mark.parametrize("exempt", ["127.0.0.1", "*"])
async def test_no_proxy_keeps_the_direct_transport(
    proxy_and_upstream: tuple[Server, Server], monkeypatch: pytest.MonkeyPatch, exempt: str
) -> None:
    proxy, upstream = proxy_and_upstream
    monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("no_proxy", exempt)
    chosen = built(upstream)
    assert isinstance(chosen, DirectTransport)
    assert (await chosen.post_json("/chat/completions", {"model": "m"}))["id"] == "c"
    await chosen.aclose()
    assert proxy.requests == [] and len(upstream.requests) == 1


async def test_without_a_proxy_the_direct_transport_is_kept_with_its_limits(
    proxy_and_upstream: tuple[Server, Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, upstream = proxy_and_upstream
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")  # https only: not ours
    chosen = built(upstream, max_connections=7, max_response_bytes=4096)  # type: ignore[arg-type]
    assert isinstance(chosen, DirectTransport)
    assert (await chosen.post_json("/chat/completions", {"model": "m"}))["id"] == "c"
    pool = chosen._client()
    assert (pool.max_connections, pool.max_body_bytes) == (7, 4096)
    await chosen.aclose()
    assert proxy.requests == []
