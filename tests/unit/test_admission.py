"""Admission: allowed models, limits per key/team/model, budgets with reserve-then-reconcile,
OpenAI's rate-limit headers, and JWT credentials (manual clock, in-process limiter)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import jwt
import pytest
from clocks import ManualClock
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from noa.access.accounting import Accounting, Meter
from noa.access.admission import Gatekeeper, duration, period_bounds
from noa.access.identity import MASTER, Authenticator, JwtVerifier, MasterKey, Principal
from noa.access.keys import Limits
from noa.access.limiter import LocalLimiter
from noa.config import JwtConfig, parse_config
from noa.errors import AuthenticationError, PermissionDeniedError, RateLimitError
from noa.observability.metrics import Metrics
from noa.routing.plan import Plan
from noa.routing.registry import ModelRegistry, ProviderInfo
from noa.routing.results import RouteInfo
from noa.wire.operations import Operation

T0 = 1_763_856_000.0  # 2025-11-23 00:00:00 UTC, a Sunday


class Clock(ManualClock):
    start = T0 + 3600


def registry() -> ModelRegistry:
    config = parse_config(
        {
            "models": [
                {
                    "id": "gpt",
                    "chain": [
                        {"provider": "openai", "upstream": "cheap"},
                        {
                            "provider": "openai",
                            "upstream": "dear",
                            "price": {"input": 10.0, "output": 30.0},
                        },
                    ],
                    "price": {"input": 1.0, "output": 2.0},
                    "rate_limits": {"rpm": 1000},
                },
                {"id": "free", "provider": "openai", "upstream": "x"},
            ]
        }
    )
    return ModelRegistry(
        config.models, [ProviderInfo("openai", "openai", True)], {}, config.routing
    )


def keeper(clock: Clock, spent: float = 0.0, **limits: Limits) -> Gatekeeper:
    async def spend(scope: str, scope_id: str, since: float) -> float:
        return spent

    model_limits = {"gpt": Limits(rpm=1000), **limits}
    return Gatekeeper(LocalLimiter(clock), model_limits, spend, clock=clock)


def key(**fields: Any) -> Principal:
    return Principal("key", "key_1", **fields)


def body(model: str = "gpt", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "x" * 400}], **extra}


def plan(request: dict[str, Any]) -> Plan:
    return registry().plan(Operation.CHAT, request)


def route_of(upstream: str, *fields: Any, **more: Any) -> RouteInfo:
    """What the router reports when the candidate ``upstream`` of model gpt answered (its
    price included)."""
    (candidate,) = [c for c in plan(body()).target.candidates if c.upstream == upstream]
    return replace(
        RouteInfo.of(candidate),
        **dict(zip(("attempts", "fallbacks"), fields, strict=False)),
        **more,
    )


def test_periods_and_durations() -> None:
    assert period_bounds("day", T0 + 10) == ("2025-11-23", T0, 86_390)
    label, start, _ = period_bounds("week", T0 + 10)
    assert (label, start) == ("2025-W47", T0 - 6 * 86_400)  # Monday 17 November
    label, start, remaining = period_bounds("month", T0)
    assert label == "2025-11" and remaining == 8 * 86_400
    assert period_bounds("total", T0)[0] == "total"
    assert [duration(s) for s in (0.02, 1.5, 59, 360.4)] == ["20ms", "1.5s", "59s", "6m0s"]


async def test_the_master_key_on_an_unlimited_model_skips_the_limiter() -> None:
    assert await keeper(Clock()).admit(MASTER, plan(body("free"))) is None


async def test_models_outside_the_allowed_list_are_403() -> None:
    with pytest.raises(PermissionDeniedError) as denied:
        await keeper(Clock()).admit(key(models=frozenset({"free"})), plan(body()))
    assert denied.value.status_code == 403 and denied.value.code == "model_not_allowed"


async def test_requests_per_minute_with_headers_and_retry_after() -> None:
    clock = Clock()
    gate = keeper(clock)
    principal = key(limits=Limits(rpm=2))
    first = await gate.admit(principal, plan(body(max_tokens=10)))
    assert first is not None
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"] == "30s"
    await gate.admit(principal, plan(body(max_tokens=10)))
    with pytest.raises(RateLimitError) as limited:
        await gate.admit(principal, plan(body(max_tokens=10)))
    assert limited.value.status_code == 429
    assert limited.value.headers()["retry-after"] == "30"
    assert limited.value.code == "requests_rate_limit_exceeded"
    clock.now += 30
    assert await gate.admit(principal, plan(body(max_tokens=10))) is not None


async def test_team_limits_are_shared_by_its_keys() -> None:
    gate = keeper(Clock())
    a = Principal("key", "key_a", team="red", team_limits=Limits(rpm=1))
    b = Principal("key", "key_b", team="red", team_limits=Limits(rpm=1))
    await gate.admit(a, plan(body()))
    with pytest.raises(RateLimitError, match="team `red`"):
        await gate.admit(b, plan(body()))


async def test_tokens_are_reserved_then_reconciled() -> None:
    clock = Clock()
    gate = keeper(clock)
    principal = key(limits=Limits(tpm=1000))
    ticket = await gate.admit(principal, plan(body(max_tokens=399)))  # 101 + 399
    assert ticket is not None and ticket.headers["x-ratelimit-remaining-tokens"] == "500"
    route = route_of("cheap")
    await gate.settle(ticket, route, {"prompt_tokens": 101, "completion_tokens": 9})
    again = await gate.admit(principal, plan(body(max_tokens=399)))
    assert again is not None and again.headers["x-ratelimit-remaining-tokens"] == "390"


async def test_budget_reservation_at_the_highest_price_and_cost_at_the_actual_one() -> None:
    clock = Clock()
    gate = keeper(clock, spent=0.0)
    principal = key(limits=Limits(budget_usd=0.02, budget_period="day"))
    ticket = await gate.admit(principal, plan(body(max_tokens=100)))
    assert ticket is not None
    # the ceiling at the dearest entry: the prompt's 400 bytes + 1 + 2 x 8 template tokens,
    # and its 100 completion tokens: 417 * 10 + 100 * 30 = 7170 micro-dollars
    assert ticket.dollars_reserved == pytest.approx(0.00717)
    cost = await gate.settle(
        ticket, route_of("cheap"), {"prompt_tokens": 100, "completion_tokens": 50}
    )
    assert cost == pytest.approx((100 * 1 + 50 * 2) / 1e6)  # the cheap entry answered
    cached = route_of("cheap", 0, 0, cache="hit-l1")
    assert gate.cost(cached, {"prompt_tokens": 100, "completion_tokens": 50}) == (0, 0, 0.0)


@pytest.mark.parametrize(
    ("extra", "completion_max"),
    [
        ({"n": 4, "max_tokens": 100}, 400),  # every choice may use its whole limit
        ({"max_completion_tokens": 50, "max_tokens": 900}, 50),
        ({}, 16_384),  # no limit, and the model has no context length: limits' ceiling
    ],
)
async def test_budgets_reserve_the_most_a_request_can_cost(
    extra: dict[str, Any], completion_max: int
) -> None:
    gate = keeper(Clock())
    principal = key(limits=Limits(budget_usd=100.0))
    ticket = await gate.admit(principal, plan(body(**extra)))
    assert ticket is not None
    assert ticket.dollars_reserved == pytest.approx((417 * 10 + completion_max * 30) / 1e6)


async def test_a_model_context_length_bounds_a_request_without_max_tokens() -> None:
    config = parse_config(
        {
            "models": [
                {
                    "id": "ctx",
                    "provider": "openai",
                    "upstream": "x",
                    "price": {"input": 1.0, "output": 1.0},
                    "context_length": 1000,
                }
            ]
        }
    )
    reg = ModelRegistry(config.models, [ProviderInfo("openai", "openai", True)], {}, None)
    gate = keeper(Clock())
    principal = key(limits=Limits(budget_usd=100.0, tpm=100_000))
    ticket = await gate.admit(principal, reg.plan(Operation.CHAT, body("ctx", n=2)))
    assert ticket is not None
    assert ticket.dollars_reserved == pytest.approx((417 + 2 * 1000) / 1e6)
    assert ticket.tokens_reserved == 101 + 2 * 256  # per minute: the estimate, times n


async def test_a_request_that_may_cost_more_than_the_budget_left_is_told_why() -> None:
    gate = keeper(Clock(), spent=0.015)
    principal = key(limits=Limits(budget_usd=0.02, budget_period="day"))
    with pytest.raises(RateLimitError) as refused:
        await gate.admit(principal, plan(body(n=8, max_tokens=100)))
    assert refused.value.code == "budget_exceeded"
    assert "$0.005 left" in refused.value.message and "max_tokens" in refused.value.message
    assert await gate.admit(principal, plan(body(max_tokens=10))) is not None


async def test_concurrent_requests_using_more_than_estimated_never_overspend() -> None:
    """Fifty requests at once, each really using more than the old estimate (four choices of
    its whole max_tokens, a prompt of one token per character): spend stays within budget."""
    clock = Clock()
    gate = keeper(clock, spent=0.01)  # spent earlier today (the usage records say)
    budget = 0.2
    principal = key(limits=Limits(budget_usd=budget, budget_period="day"))
    route = route_of("dear")
    used = {"prompt_tokens": 400, "completion_tokens": 400}

    async def one() -> float:
        try:
            ticket = await gate.admit(principal, plan(body(n=4, max_tokens=100)))
        except RateLimitError as e:
            assert e.code == "budget_exceeded"
            return 0.0
        assert ticket is not None
        await asyncio.sleep(0)
        return await gate.settle(ticket, route, used)

    costs = await asyncio.gather(*(one() for _ in range(50)))
    spent = 0.01 + sum(costs)
    assert spent <= budget
    each = (400 * 10 + 400 * 30) / 1e6
    assert sum(1 for c in costs if c) == int((budget - 0.01) // 0.01617)  # whole reservations
    assert spent > budget - 2 * each


async def test_a_revoked_key_is_refused_by_the_shared_limiter() -> None:
    clock = Clock()
    gate = keeper(clock)
    await gate.limiter.revoke("key_1")
    with pytest.raises(AuthenticationError, match="revoked"):
        await gate.admit(key(), plan(body()))


def rsa_pair() -> tuple[Any, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


async def test_jwt_rs256_and_hs256_claims_map_to_a_principal() -> None:
    private, public = rsa_pair()
    config = JwtConfig(algorithms=["RS256"], issuer="https://idp", audience="noa")
    verifier = JwtVerifier(config, public)
    claims = {
        "sub": "ana",
        "iss": "https://idp",
        "aud": "noa",
        "exp": int(time.time()) + 600,
        "team": "red",
        "scope": "admin read",
        "noa_rpm": 5,
        "noa_models": ["gpt"],
    }
    principal = verifier.verify(jwt.encode(claims, private, algorithm="RS256"))
    assert (principal.id, principal.team, principal.admin) == ("jwt:ana", "red", True)
    assert principal.limits.rpm == 5 and principal.models == frozenset({"gpt"})

    hs = JwtVerifier(JwtConfig(algorithms=["HS256"]), "a-shared-secret-of-32-bytes-long!")
    token = jwt.encode(
        {"sub": "bo", "exp": int(time.time()) + 60}, "a-shared-secret-of-32-bytes-long!"
    )
    assert hs.verify(token).id == "jwt:bo"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"aud": "other"}, "audience"),
        ({"iss": "https://evil"}, "issuer"),
        ({"exp": int(time.time()) - 3600}, "expired"),
    ],
)
async def test_jwt_wrong_audience_issuer_or_expired_is_refused(
    change: dict[str, Any], message: str
) -> None:
    private, public = rsa_pair()
    verifier = JwtVerifier(
        JwtConfig(algorithms=["RS256"], issuer="https://idp", audience="noa"), public
    )
    claims = {"sub": "ana", "iss": "https://idp", "aud": "noa", "exp": int(time.time()) + 600}
    with pytest.raises(AuthenticationError, match=message):
        verifier.verify(jwt.encode(claims | change, private, algorithm="RS256"))


async def test_jwt_with_a_bad_signature_or_algorithm_is_refused() -> None:
    _private, public = rsa_pair()
    other, _ = rsa_pair()
    verifier = JwtVerifier(JwtConfig(algorithms=["RS256"]), public)
    claims = {"sub": "ana", "exp": int(time.time()) + 600}
    with pytest.raises(AuthenticationError, match="Invalid token"):
        verifier.verify(jwt.encode(claims, other, algorithm="RS256"))
    with pytest.raises(AuthenticationError, match="Invalid token"):  # HS256 signed with the PEM
        verifier.verify(jwt.encode(claims, public.encode()[:64], algorithm="HS256"))


async def test_authenticator_order_master_then_jwt_then_keys() -> None:
    _, public = rsa_pair()
    auth = Authenticator(
        master=MasterKey("sk-master"), jwt=JwtVerifier(JwtConfig(), public), required=True
    )
    assert await auth.authenticate("sk-master") == MASTER
    with pytest.raises(AuthenticationError, match="Missing"):
        await auth.authenticate(None)
    with pytest.raises(AuthenticationError, match="Incorrect"):
        await auth.authenticate("sk-wrong")
    with pytest.raises(AuthenticationError, match="Invalid token"):
        await auth.authenticate("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")


class CountingKeys:
    """A key store that counts its reads (``verify``) and can revoke."""

    def __init__(self) -> None:
        from noa.access.keys import ApiKey, KeyHasher

        self.hasher = KeyHasher(b"0123456789abcdef0123")
        self.reads = 0
        self.key = ApiKey("key_1", "sk-noa-abcde", None, None, (), None, Limits(), {}, 0.0)

    async def digest(self, secret: str) -> str:
        return self.hasher.digest(secret)

    async def verify(self, secret: str) -> Any:
        self.reads += 1
        await asyncio.sleep(0)
        return self.key


async def test_a_busy_key_is_read_once_and_refreshed_in_the_background() -> None:
    from dataclasses import replace

    clock = Clock()
    store = CountingKeys()
    auth = Authenticator(keys=store, required=True, cache_s=5, clock=clock)  # type: ignore[arg-type]
    principals = await asyncio.gather(*(auth.authenticate("sk-noa-secret") for _ in range(20)))
    assert {p.id for p in principals} == {"key_1"} and store.reads == 1
    clock.now += 6  # stale: served at once, re-read by one request in the background
    store.key = replace(store.key, revoked_at=clock.now)
    stale = await asyncio.gather(*(auth.authenticate("sk-noa-secret") for _ in range(20)))
    assert {p.id for p in stale} == {"key_1"}
    for _ in range(5):
        await asyncio.sleep(0)
    assert store.reads == 2
    with pytest.raises(AuthenticationError, match="revoked"):
        await auth.authenticate("sk-noa-secret")


async def test_settled_answers_feed_the_provider_metrics_but_cache_hits_do_not() -> None:
    clock = Clock()
    metrics = Metrics()
    accounting = Accounting(keeper(clock), clock=clock, metrics=metrics)
    principal = key(limits=Limits(tpm=10_000))
    usage = {"prompt_tokens": 100, "completion_tokens": 50}
    meter = await accounting.admit(principal, plan(body()))
    started = meter.started
    clock.now += 0.25
    answered = route_of("cheap", 2, 1, upstream_s=0.2)
    await meter.settle(answered, usage, 200)
    hit = route_of("cheap", 0, 0, cache="hit-l2")
    await Meter(accounting, principal, plan(body()), None, started).settle(hit, usage, 200)
    unlimited = Meter(accounting, principal, plan(body()), None, started)
    await unlimited.failed(RateLimitError("no"))
    snapshot = metrics.snapshot()
    assert snapshot["ai_provider_requests_total"] == {("openai", "gpt", "200"): 1}
    assert snapshot["ai_provider_tokens_total"] == {
        ("openai", "gpt", "input"): 100,
        ("openai", "gpt", "output"): 50,
    }
    assert snapshot["ai_provider_cost_total"] == {("openai", "gpt"): pytest.approx(200 / 1e6)}
    latency = snapshot["ai_provider_latency_seconds"][("openai", "gpt")]
    assert isinstance(latency, list) and latency[-1] == pytest.approx(0.25)
    assert snapshot["noa_fallbacks_total"] == {("gpt",): 1}
    overhead = snapshot["noa_gateway_overhead_seconds"][("chat",)]
    assert isinstance(overhead, list) and overhead[-1] == pytest.approx(0.05)  # 0.25 - 0.2
