"""The Redis limiter decides exactly as the in-process one (same scenarios, real Redis), stays
exact across two instances under concurrency, and fails open or closed as configured."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from clocks import ManualClock
from test_cache_stores import PrivateRedis

from noa.access.limiter import FailoverLimiter, Limiter, LocalLimiter, RedisLimiter
from noa.access.limits import Reserve, Take
from noa.errors import ServiceUnavailableError


class Clock(ManualClock):
    start = 1_700_000_000.0


def redis_url() -> str:
    value = os.environ.get("NOA_TEST_REDIS_URL")
    if not value:
        pytest.fail("NOA_TEST_REDIS_URL is not set: run the suite through ./scripts/test.sh")
    return value


@pytest.fixture(params=["local", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Limiter, Clock, str]]:
    """A backend, its clock, and a prefix of this test's own for every key it uses."""
    clock = Clock()
    scope = uuid.uuid4().hex[:8]
    if request.param == "local":
        yield LocalLimiter(clock), clock, scope
        return
    backend = RedisLimiter(redis_url(), test_clock=clock)
    yield backend, clock, scope
    await backend.aclose()


async def test_buckets_refill_and_refuse_alike(limiter: tuple[Limiter, Clock, str]) -> None:
    backend, clock, s = limiter
    take = Take(f"rpm:key:{s}", 6, 1)
    results = [await backend.admit([take], []) for _ in range(8)]
    assert [r.allowed for r in results] == [True] * 6 + [False] * 2
    assert (results[-1].reason, results[-1].scope) == ("rpm", take.key)
    assert results[-1].retry_after_s == pytest.approx(10.0)
    assert results[0].levels[take.key].remaining == 5
    assert results[0].levels[take.key].reset_s == pytest.approx(10.0)
    clock.now += 10
    assert (await backend.admit([take], [])).allowed


async def test_all_or_nothing_reconcile_and_budgets_alike(
    limiter: tuple[Limiter, Clock, str],
) -> None:
    backend, _clock, s = limiter
    team = Take(f"rpm:team:{s}", 1, 1)
    tokens = Take(f"tpm:key:{s}", 1000, 300)
    assert (await backend.admit([tokens, team], [])).allowed
    refused = await backend.admit([tokens, team], [])
    assert refused.scope == team.key
    assert refused.levels[tokens.key].remaining == 700  # not charged by the refused request
    await backend.adjust({tokens.key: (1000, -200)}, {})  # used 100 of the 300 reserved
    decision = await backend.admit([tokens], [])
    assert decision.allowed and decision.levels[tokens.key].remaining == 600

    budget = f"budget:key:{s}:month"
    first = await backend.admit([], [Reserve(budget, 1.0, 0.4, 3600, seed=0.3)])
    assert first.allowed and first.spent[budget] == pytest.approx(0.7)
    over = await backend.admit([], [Reserve(budget, 1.0, 0.4, 3600)])
    assert (over.allowed, over.reason, over.retry_after_s) == (False, "budget", 3600)
    await backend.adjust({}, {budget: -0.35})
    assert (await backend.admit([], [Reserve(budget, 1.0, 0.4, 3600)])).allowed


async def test_revocation_is_seen_by_the_next_decision(
    limiter: tuple[Limiter, Clock, str],
) -> None:
    backend, _, s = limiter
    await backend.revoke(f"key_{s}")
    refused = await backend.admit([Take(f"rpm:key:{s}", 5, 1)], [], f"key_{s}")
    assert (refused.allowed, refused.reason) == (False, "revoked")


async def test_two_instances_sharing_redis_admit_exactly_the_limit() -> None:
    clock = Clock()
    a, b = RedisLimiter(redis_url(), test_clock=clock), RedisLimiter(redis_url(), test_clock=clock)
    key = f"rpm:key:{uuid.uuid4().hex[:8]}"
    budget = f"budget:team:{uuid.uuid4().hex[:8]}:day"
    try:
        results = await asyncio.gather(
            *(
                (a if i % 2 else b).admit([Take(key, 20, 1)], [Reserve(budget, 1.0, 0.03, 60)])
                for i in range(60)
            )
        )
    finally:
        await a.aclose()
        await b.aclose()
    assert sum(r.allowed for r in results) == 20
    assert max(max(r.spent.values(), default=0) for r in results) <= 1.0


async def test_replicas_whose_clocks_disagree_decide_on_redis_time() -> None:
    """Two replicas on machines five minutes apart: the one ahead must not see the others'
    buckets as refilled (each replica's own ``time.time`` would say it is)."""
    behind, ahead = RedisLimiter(redis_url()), RedisLimiter(redis_url())
    # what a replica's clock five minutes fast looks like to the limiter
    ahead.clock = lambda: time.time() + 300  # type: ignore[attr-defined]
    key = f"rpm:key:{uuid.uuid4().hex[:8]}"
    try:
        first = [await behind.admit([Take(key, 3, 1)], []) for _ in range(3)]
        later = [await ahead.admit([Take(key, 3, 1)], []) for _ in range(3)]
    finally:
        await behind.aclose()
        await ahead.aclose()
    assert [d.allowed for d in first] == [True] * 3
    assert [d.allowed for d in later] == [False] * 3
    assert later[0].retry_after_s > 15  # one request back per 20 s


async def test_redis_down_fails_open_to_local_decisions_or_closed(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path)
    clock = Clock()
    shared = RedisLimiter(server.url, timeout_s=0.3, test_clock=clock)
    open_ = FailoverLimiter(shared, LocalLimiter(clock), "open")
    closed = FailoverLimiter(shared, LocalLimiter(clock), "closed")
    take = Take("rpm:key:failover", 2, 1)
    try:
        assert (await open_.admit([take], [])).allowed
        server.kill()
        local = [await open_.admit([take], []) for _ in range(3)]
        assert [d.allowed for d in local] == [True, True, False]  # local limits still hold
        assert open_.failures == 3
        with pytest.raises(ServiceUnavailableError) as refused:
            await closed.admit([take], [])
        assert refused.value.status_code == 503 and refused.value.retry_after
    finally:
        server.kill()
        await shared.aclose()
