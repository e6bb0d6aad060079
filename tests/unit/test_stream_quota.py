"""A provider quota is charged what a stream used: the usage it reported when it completed,
the prompt and the chunks that passed when it was cut (not the reservation either way)."""

from __future__ import annotations

from typing import Any

from clocks import ManualClock
from test_routing import REQUEST, Scripted, make_router

from noa.config import ProviderLimits
from noa.routing.quota import ProviderQuota

PROMPT = 1  # "hi", estimated


def metered() -> tuple[Any, ProviderQuota]:
    clock = ManualClock()  # stands still: nothing refills while the test looks
    quota = ProviderQuota(ProviderLimits(tpm=10_000), clock=clock)
    return make_router(Scripted("p1"), clock=clock, quotas={"p1": quota}), quota


def used(quota: ProviderQuota) -> float:
    assert quota._tpm is not None
    return 10_000 - quota._tpm.level


async def test_a_stream_cut_by_the_client_charges_the_prompt_and_the_chunks_seen() -> None:
    router, quota = metered()
    stream = await router.stream_chat(dict(REQUEST, max_tokens=500))
    assert used(quota) == PROMPT + 500  # reserved while it runs
    first = await stream.__anext__()
    assert first["choices"][0]["delta"]["content"] == "p1:"
    await stream.aclose()  # the client left after one chunk
    assert used(quota) == PROMPT + 1
    assert quota.in_flight == 0


async def test_a_complete_stream_charges_what_it_used() -> None:
    router, quota = metered()
    stream = await router.stream_chat(dict(REQUEST, max_tokens=500))
    chunks = [c async for c in stream]
    assert len(chunks) == 2
    assert used(quota) == PROMPT + 2  # two chunks of text, no usage chunk from this provider
