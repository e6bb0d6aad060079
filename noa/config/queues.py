"""Queue bridges: broker messages in, jobs, results back (``noa/queues/``). One entry of
``queues:`` per bridge; each becomes its own Serve deployment (``QueueBridge-<name>``).

The broker's URL is read from the environment variable ``url_env`` (it may hold credentials),
never from the YAML; for SQS it is the endpoint URL and may be left unset (AWS's own, with the
region and credentials of the standard AWS chain)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from noa.config.base import Strict, env_secret

BrokerKind = Literal["rabbitmq", "kafka", "sqs", "redis"]
NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class BridgeScaling(Strict):
    """Replicas of one bridge's deployment, scaled by the source's lag (its waiting messages,
    as every replica measures it): ``ceil(lag / lag_per_replica)``, within the bounds."""

    min_replicas: int = Field(1, ge=1, le=100)  # one at least: it measures the lag
    max_replicas: int = Field(1, ge=1, le=100)
    lag_per_replica: int = Field(
        1000, ge=1, description="waiting messages one replica is expected to keep up with"
    )
    upscale_delay_s: float = Field(10.0, ge=0)
    downscale_delay_s: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> BridgeScaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self


class QueueBridgeConfig(Strict):
    name: str = Field(pattern=NAME, description="the bridge's name (idempotency keys, metrics)")
    kind: BrokerKind
    url_env: str | None = Field(
        None, description="env var with the broker URL (SQS: the endpoint, optional)"
    )
    source: str = Field(min_length=1, description="the queue, topic or stream read")
    reply_to: str | None = Field(
        None, description="where results go when a message names no reply_to"
    )
    dead_letter: str = Field(
        min_length=1, description="where poison messages and dead jobs go, with the reason"
    )
    group: str = Field("noa", min_length=1, description="consumer group (Kafka, Redis Streams)")
    concurrency: int = Field(64, ge=1, le=10_000, description="messages held at once (prefetch)")
    max_queue_depth: int | None = Field(
        None, ge=1, description="queued jobs of a message's model past which pulling stops"
    )
    default_priority: Literal["high", "medium", "low"] = "medium"
    default_model: str | None = None
    key_id: str | None = Field(
        None, description="the API key whose limits, budget and usage the jobs are (the master)"
    )
    max_attempts: int = Field(3, ge=1, le=100, description="attempts per job")
    max_message_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    declare: bool = Field(True, description="create the queues/topics/streams when missing")
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description=(
            "the broker's own settings: sqs region, visibility_s; redis claim_idle_s, maxlen"
        ),
    )
    scaling: BridgeScaling = BridgeScaling()
    num_cpus: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _needs_url(self) -> QueueBridgeConfig:
        if self.kind != "sqs" and not self.url_env:
            raise ValueError(f"a {self.kind} bridge needs url_env (the broker URL's variable)")
        if self.url_env is not None and not re.match(r"^[A-Z_][A-Z0-9_]*$", self.url_env):
            raise ValueError("url_env must be an environment variable's name")
        return self

    def url(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The broker's URL from the environment (None: unset)."""
        if self.url_env is None:
            return None
        value = env_secret(self.url_env, environ)
        return value.get_secret_value() if value is not None else None

    def options_map(self) -> dict[str, Any]:
        return dict(self.options)


def unique_names(bridges: list[QueueBridgeConfig]) -> list[QueueBridgeConfig]:
    names = [b.name for b in bridges]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ValueError(f"queue bridge names must be unique: {', '.join(doubled)}")
    return bridges
