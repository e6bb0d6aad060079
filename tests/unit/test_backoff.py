"""Retry backoff: exponential, capped, jittered by at most 30 %, on an injected rng."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noa.jobs.backoff import backoff_s


@given(
    attempt=st.integers(min_value=0, max_value=10_000),
    base=st.floats(min_value=0.0, max_value=1_000.0),
    cap=st.floats(min_value=0.0, max_value=86_400.0),
    seed=st.integers(),
)
def test_the_delay_is_within_its_bounds(attempt: int, base: float, cap: float, seed: int) -> None:
    delay = backoff_s(attempt, base, cap, rng=random.Random(seed))
    try:
        exact = math.ldexp(base, attempt)  # base * 2**attempt
    except OverflowError:
        exact = math.inf
    assert 0.0 <= delay <= cap
    assert delay >= min(cap, exact)
    assert delay <= min(cap, exact * 1.3) + 1e-9


@given(attempt=st.integers(min_value=0, max_value=40), seed=st.integers())
def test_the_same_rng_gives_the_same_delay(attempt: int, seed: int) -> None:
    assert backoff_s(attempt, rng=random.Random(seed)) == backoff_s(
        attempt, rng=random.Random(seed)
    )


def test_it_doubles_then_stops_at_the_cap() -> None:
    class NoJitter(random.Random):
        def random(self) -> float:
            return 0.0

    class FullJitter(random.Random):
        def random(self) -> float:
            return 0.999999

    assert [backoff_s(a, rng=NoJitter()) for a in range(10)] == [
        *(2.0**a for a in range(9)),  # 1, 2, ... 256 s
        300.0,  # 512 s: the cap
    ]
    assert backoff_s(0, base_s=2.0, rng=FullJitter()) == pytest.approx(2.6, rel=1e-5)
    assert backoff_s(8, rng=FullJitter()) == 300.0  # 256 s plus jitter is past the cap
    assert backoff_s(10**6, rng=NoJitter()) == 300.0
    assert backoff_s(10**6, base_s=0.0, rng=FullJitter()) == 0.0


def test_it_refuses_negative_inputs() -> None:
    with pytest.raises(ValueError):
        backoff_s(-1, rng=random.Random(0))
    with pytest.raises(ValueError):
        backoff_s(1, base_s=-1.0, rng=random.Random(0))
