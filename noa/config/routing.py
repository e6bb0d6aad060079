"""How requests are routed: model groups, retries, deadlines and circuit breakers."""

from __future__ import annotations

from pydantic import Field

from noa.config.base import Strict
from noa.config.models import Strategy


class GroupConfig(Strict):
    """A name that routes among several models by a strategy (``auto`` is a group too)."""

    id: str = Field(min_length=1, description="the name clients send as `model`")
    models: list[str] = Field(min_length=1, description="ids of configured models")
    strategy: Strategy = Field("priority", description="how the members' entries are ordered")


class BreakerConfig(Strict):
    """A circuit breaker per (provider, upstream model)."""

    failure_threshold: int = Field(5, ge=1, description="consecutive failures that open it")
    error_rate: float = Field(
        0.5, gt=0, le=1, description="or this failure share over `window_s` opens it"
    )
    min_requests: int = Field(20, ge=1, description="calls in the window before the rate counts")
    window_s: float = Field(30.0, gt=0, description="the error-rate window")
    cooldown_s: float = Field(30.0, gt=0, description="OPEN this long, then one probe")
    share_through_redis: bool = Field(
        True,
        description="with Redis configured, every NOA app on it shares breaker state (turn off "
        "where apps' provider names mean different accounts)",
    )


class RoutingConfig(Strict):
    """Fallback, retries, deadlines, breakers and model groups."""

    groups: list[GroupConfig] = Field(default_factory=list, description="named model groups")
    auto_strategy: Strategy = Field(
        "priority", description="the `auto` group (every configured model) when not in groups"
    )
    retries: int = Field(1, ge=0, le=10, description="retries per candidate after its first try")
    backoff_base_s: float = Field(0.2, ge=0, description="retry n waits base * 2^n (+30% jitter)")
    backoff_cap_s: float = Field(5.0, ge=0, description="longest wait between retries")
    max_retry_after_s: float = Field(
        5.0, ge=0, description="a longer upstream Retry-After moves on to the next candidate"
    )
    deadline_s: float = Field(
        600.0, gt=0, description="bounds a request's whole chain (streams: until the first token)"
    )
    stream_idle_timeout_s: float = Field(
        60.0, gt=0, description="a stream silent this long fails (before its first token: next)"
    )
    breaker: BreakerConfig = BreakerConfig()
