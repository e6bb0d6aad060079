"""Providers built from a ``NoaConfig``: which are enabled, the cloud SDK clients, llama.cpp."""

from __future__ import annotations

import os
from collections.abc import Mapping

from noa.config import (
    BUNDLED_MODEL_NAME,
    AnthropicProviderConfig,
    CloudProviderConfig,
    LlamaCppProviderConfig,
    NoaConfig,
    OpenAIProviderConfig,
)
from noa.providers.anthropic import AnthropicProvider
from noa.providers.base import Provider
from noa.providers.llamacpp.models import (
    LlamaSettings,
    LruModelStore,
    ModelCatalog,
    bundled_model_path,
)
from noa.providers.llamacpp.process import LlamaProcess
from noa.providers.llamacpp.provider import LlamaCppProvider
from noa.providers.openai import OpenAIProvider
from noa.providers.remote import RemoteProvider
from noa.routing.registry import ProviderInfo

Environ = Mapping[str, str]


def provider_infos(config: NoaConfig, environ: Environ | None = None) -> list[ProviderInfo]:
    """Each configured provider, enabled or not (cloud providers need their API key)."""
    infos = []
    for name, cfg in config.providers.items():
        if isinstance(cfg, OpenAIProviderConfig | AnthropicProviderConfig):
            enabled = cfg.api_key(environ) is not None
            why = "" if enabled else f"set {cfg.api_key_env} to enable it"
            infos.append(ProviderInfo(name, cfg.kind, enabled, why))
        else:
            infos.append(ProviderInfo(name, cfg.kind, True))
    return infos


def cloud_providers(config: NoaConfig, environ: Environ | None = None) -> dict[str, Provider]:
    """In-process clients for every enabled OpenAI/Anthropic provider."""
    providers: dict[str, Provider] = {}
    for name, cfg in config.providers.items():
        if not isinstance(cfg, CloudProviderConfig):
            continue
        key = cfg.api_key(environ)
        if key is None:
            continue
        secret, url = key.get_secret_value(), cfg.resolved_base_url(environ)
        if isinstance(cfg, OpenAIProviderConfig):
            providers[name] = OpenAIProvider.from_config(name, cfg, secret, url)
        elif isinstance(cfg, AnthropicProviderConfig):
            providers[name] = AnthropicProvider.from_config(name, cfg, secret, url)
    return providers


def local_provider_configs(config: NoaConfig) -> dict[str, LlamaCppProviderConfig]:
    return {n: c for n, c in config.providers.items() if isinstance(c, LlamaCppProviderConfig)}


def catalog(cfg: LlamaCppProviderConfig) -> ModelCatalog:
    bundled = (BUNDLED_MODEL_NAME, bundled_model_path()) if cfg.bundled else None
    return ModelCatalog(cfg.models, cfg.models_dir, bundled)


def llama_settings(cfg: LlamaCppProviderConfig, gpu_visible: bool) -> LlamaSettings:
    default_layers = -1 if gpu_visible else 0
    layers = cfg.n_gpu_layers if cfg.n_gpu_layers is not None else default_layers
    return LlamaSettings(
        n_ctx=cfg.n_ctx,
        n_threads=cfg.n_threads or os.cpu_count() or 1,
        n_batch=cfg.n_batch,
        n_gpu_layers=layers,
        chat_format=cfg.chat_format,
    )


def local_models(config: NoaConfig) -> dict[str, list[str]]:
    """Each llama.cpp provider's model names (listed in ``/v1/models`` as ``<provider>/<name>``)."""
    return {name: catalog(cfg).names() for name, cfg in local_provider_configs(config).items()}


def inprocess_local(config: NoaConfig) -> dict[str, Provider]:
    """llama.cpp in this process (a worker process each, an LRU of loaded models): for tests
    and tools; served, each local provider has LlamaCpp replicas of its own."""
    providers: dict[str, Provider] = {}
    for name, cfg in local_provider_configs(config).items():
        worker = LlamaProcess(llama_settings(cfg, gpu_visible=False), name=f"llama-{name}")
        store = LruModelStore(catalog(cfg), worker, cfg.max_loaded_models)
        providers[name] = LlamaCppProvider(name, store, worker)
    return providers


def remote_local(handles: Mapping[str, object]) -> dict[str, Provider]:
    """The LlamaCpp deployments' handles as providers (Serve's multiplexer picks a replica that
    holds the model)."""
    return {n: RemoteProvider(n, "llamacpp", h, multiplexed=True) for n, h in handles.items()}
