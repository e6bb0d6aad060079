"""Retry delays: exponential, capped, with up to 30 % jitter (so retries of many jobs that
failed together spread out rather than return together)."""

from __future__ import annotations

import math
import random

JITTER = 0.3


def backoff_s(
    attempt: int, base_s: float = 1.0, cap_s: float = 300.0, *, rng: random.Random
) -> float:
    """Seconds to wait before retrying after ``attempt`` (0 for the first failure):
    ``min(cap_s, base_s * 2**attempt + up to 30 % jitter)``, never negative."""
    if attempt < 0 or base_s < 0 or cap_s < 0:
        raise ValueError("attempt, base_s and cap_s must not be negative")
    try:
        delay = math.ldexp(base_s, attempt)  # base_s * 2**attempt, exactly
    except OverflowError:  # past any float, so past any cap
        return cap_s
    if delay >= cap_s:
        return cap_s
    return min(cap_s, delay * (1.0 + JITTER * rng.random()))
