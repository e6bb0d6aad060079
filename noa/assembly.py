"""Building the cores from a ``NoaConfig``: providers, the registry, the router.

The Serve builder (``deployments/app.py``) and the tests assemble NOA from these functions; only
the placement differs (a provider in-process, or a ``RemoteProvider`` over a handle).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from noa.access import Access
from noa.access import build as build_access
from noa.breaker import BreakerBoard
from noa.cache_flight import FlightBoard, SharedFlights
from noa.cache_redis import RedisTier
from noa.cache_sql import SqlTier
from noa.cache_store import TtlLru
from noa.cache_tiers import MemoryTier, Tier, TieredCache
from noa.config import (
    BUNDLED_MODEL_NAME,
    AnthropicProviderConfig,
    LlamaCppProviderConfig,
    NoaConfig,
    OpenAIProviderConfig,
)
from noa.providers.anthropic_provider import AnthropicProvider
from noa.providers.base import Provider
from noa.providers.llamacpp import LlamaCppProvider
from noa.providers.llamacpp_models import (
    LlamaSettings,
    LruModelStore,
    ModelCatalog,
    bundled_model_path,
)
from noa.providers.llamacpp_process import LlamaProcess
from noa.providers.openai_provider import OpenAIProvider
from noa.quota import ProviderQuota
from noa.registry import ModelRegistry, ProviderInfo
from noa.response_cache import ResponseCache
from noa.router import Router
from noa.service import NoaService
from noa.tracing import Tracing

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
        if not isinstance(cfg, OpenAIProviderConfig | AnthropicProviderConfig):
            continue
        key = cfg.api_key(environ)
        if key is None:
            continue
        base_url = cfg.resolved_base_url(environ)
        if isinstance(cfg, OpenAIProviderConfig):
            providers[name] = OpenAIProvider.from_config(
                name, cfg, key.get_secret_value(), base_url
            )
        else:
            providers[name] = AnthropicProvider.from_config(
                name, cfg, key.get_secret_value(), base_url
            )
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


def registry(config: NoaConfig, environ: Environ | None = None) -> ModelRegistry:
    local = {name: catalog(cfg).names() for name, cfg in local_provider_configs(config).items()}
    return ModelRegistry(config.models, provider_infos(config, environ), local, config.routing)


def quota_share(config: NoaConfig) -> float:
    """Each routing replica's share of a provider's limits: Gateway and Router replicas both
    call providers (the Router serves Python callers even when the hot path is inline)."""
    d = config.deployment
    callers = d.router.num_replicas + (d.gateway.num_replicas if d.hot_path == "inline" else 0)
    return 1.0 / callers


def quotas(config: NoaConfig, share: float = 1.0) -> dict[str, ProviderQuota]:
    """Quota trackers for every provider with configured limits."""
    return {
        name: ProviderQuota(cfg.limits, share=share)
        for name, cfg in config.providers.items()
        if cfg.limits.rpm or cfg.limits.tpm or cfg.limits.max_concurrency
    }


def router(
    config: NoaConfig,
    providers: Mapping[str, Provider],
    environ: Environ | None = None,
    *,
    share: float = 1.0,
    breakers: BreakerBoard | None = None,
    tracing: Tracing | None = None,
) -> Router:
    """A router over ``providers``; llama.cpp answers are reported under NOA's model ids."""
    return Router(
        registry(config, environ),
        providers,
        rename_models=frozenset(local_provider_configs(config)),
        routing=config.routing,
        quotas=quotas(config, share),
        breakers=breakers,
        tracing=tracing,
    )


def cache_tiers(
    config: NoaConfig, shared: Tier | None = None, environ: Environ | None = None
) -> TieredCache:
    """L1 in this process; L2 Redis when configured, else ``shared`` (the CacheActor in the
    Serve app); L3 the database. Each only when enabled."""
    c = config.cache
    tiers: list[Tier] = []
    ttls: list[float] = []
    if c.memory.enabled:
        tiers.append(MemoryTier(TtlLru(c.memory.max_entries, c.memory.ttl_s), c.memory.ttl_s))
        ttls.append(c.memory.ttl_s)
    if c.shared.enabled:
        redis_url = config.redis.url(environ)
        l2 = RedisTier(redis_url) if redis_url else shared
        if l2 is not None:
            tiers.append(l2)
            ttls.append(c.shared.ttl_s)
    if c.sql.enabled:
        tiers.append(SqlTier(config.database.url(environ), max_entries=c.sql.max_entries))
        ttls.append(c.sql.ttl_s)
    return TieredCache(tiers, ttls)


def response_cache(
    config: NoaConfig,
    models: ModelRegistry,
    shared: Tier | None = None,
    environ: Environ | None = None,
) -> ResponseCache | None:
    """The response cache, or None when ``cache.enabled`` is off."""
    if not config.cache.enabled:
        return None
    tiers = cache_tiers(config, shared, environ)
    return ResponseCache(tiers, config.cache, models, shared_flights(config, tiers))


def shared_flights(config: NoaConfig, tiers: TieredCache) -> SharedFlights | None:
    """Single flight across replicas through the shared tier, when there is one and it is on."""
    flight = config.cache.single_flight
    if not flight.across_replicas:
        return None
    for tier in tiers.tiers:
        if tier.name == "l2" and isinstance(tier, FlightBoard):
            return SharedFlights(
                tier,
                lease_s=flight.lease_s,
                max_wait_s=flight.max_wait_s,
                retry_after_s=tiers.retry_after_s,
            )
    return None


def inprocess(config: NoaConfig, environ: Environ | None = None) -> tuple[NoaService, Access]:
    """The service with keys, limits and usage accounting, all in this process (the database
    from the config): for tests and tools. Serve the app with ``create_app(service,
    auth=access.auth, admin=access.admin)``."""
    service = inprocess_service(config, environ)
    access = build_access(config, service.registry, environ=environ)
    service.accounting = access.accounting
    return service, access


def inprocess_service(config: NoaConfig, environ: Environ | None = None) -> NoaService:
    """Everything in this process (llama.cpp included): for tests and tools, not for serving."""
    providers: dict[str, Provider] = dict(cloud_providers(config, environ))
    for name, cfg in local_provider_configs(config).items():
        worker = LlamaProcess(llama_settings(cfg, gpu_visible=False), name=f"llama-{name}")
        store = LruModelStore(catalog(cfg), worker, cfg.max_loaded_models)
        providers[name] = LlamaCppProvider(name, store, worker)
    core = router(config, providers, environ)
    return NoaService(core, core.registry, response_cache(config, core.registry, environ=environ))
