"""NOA's configuration: one pydantic model tree, strict about unknown keys.

The same tree validates ``serve_config.yaml``'s ``args``, ``noa serve --config FILE`` and the
tests. Secrets never live here: each provider names the environment variable that holds its key,
read when the provider is built, and held as ``SecretStr``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from noa.config.access import AuthConfig, LimitsConfig, UsageConfig
from noa.config.base import Strict
from noa.config.deployment import DeploymentConfig, ServerConfig
from noa.config.jobs import JobsConfig
from noa.config.models import ModelConfig, bundled_model
from noa.config.providers import (
    AnthropicProviderConfig,
    LlamaCppProviderConfig,
    OpenAIProviderConfig,
    ProviderConfig,
)
from noa.config.queues import QueueBridgeConfig, unique_names
from noa.config.routing import RoutingConfig
from noa.config.storage import CacheConfig, DatabaseConfig, RedisConfig


class ConfigError(ValueError):
    """The configuration is invalid; the message names every offending key."""


def _default_providers() -> dict[str, Any]:
    return {
        "openai": OpenAIProviderConfig(),
        "anthropic": AnthropicProviderConfig(),
        "local": LlamaCppProviderConfig(),
    }


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
    jobs: JobsConfig = JobsConfig()
    queues: list[QueueBridgeConfig] = Field(
        default_factory=list, description="queue bridges: broker messages in, jobs, results out"
    )

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
        unique_names(self.queues)
        if self.queues and not self.jobs.enabled:
            raise ValueError("queues: a queue bridge needs the job system (jobs.enabled)")
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
