"""The registry and the router built from a ``NoaConfig``, and a router linked to its app's
shared health (breakers, active checks, traffic) when it serves in a replica."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from noa.build.providers import (
    local_models,
    local_provider_configs,
    provider_infos,
    remote_local,
)
from noa.config import NoaConfig
from noa.observability.tracing import Tracing
from noa.providers.base import Provider
from noa.providers.remote import RemoteProvider
from noa.routing.breakers.board import Breakers
from noa.routing.breakers.hub import BreakerLink, ChangeOutbox
from noa.routing.health_center import HealthView, RemoteHealth
from noa.routing.quota import ProviderQuota
from noa.routing.registry import ModelRegistry
from noa.routing.router import Router

Environ = Mapping[str, str]


def registry(config: NoaConfig, environ: Environ | None = None) -> ModelRegistry:
    return ModelRegistry(
        config.models, provider_infos(config, environ), local_models(config), config.routing
    )


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
    *,
    share: float = 1.0,
    breakers: Breakers | None = None,
    tracing: Tracing | None = None,
) -> Router:
    """A router over ``providers``; llama.cpp answers are reported under NOA's model ids."""
    return Router(
        providers,
        rename_models=frozenset(local_provider_configs(config)),
        routing=config.routing,
        quotas=quotas(config, share),
        breakers=breakers,
        tracing=tracing,
    )


@dataclass
class LinkedRouter:
    """A replica's router and its link to the app's shared health (started together)."""

    router: Router
    link: BreakerLink

    async def aclose(self) -> None:
        await self.link.aclose()
        await self.router.aclose()


def linked_router(
    config: NoaConfig,
    providers: Mapping[str, Provider],
    health: HealthView,
    replica: str,
    tracing: Tracing | None = None,
) -> LinkedRouter:
    """A router whose breakers every replica of the app shares through ``health``: one
    replica's discovery protects them all, one replica probes a due breaker for all of them,
    and the active checks' verdicts reach every router."""
    outbox = ChangeOutbox()
    breakers = Breakers(
        config.routing.breaker, on_change=outbox.put, claim_probe=health.claim_probe
    )
    core = router(config, providers, share=quota_share(config), breakers=breakers, tracing=tracing)

    async def publish(change: Any) -> None:
        await health.report(change.key, change.state.value, change.remaining_s)

    async def traffic(stats: dict[str, Any]) -> None:
        await health.report_traffic(replica, stats)

    link = BreakerLink(
        breakers, outbox, publish, health.watch, traffic=(core.stats.snapshot, traffic)
    )
    link.start()
    return LinkedRouter(core, link)


def behind_handles(
    config: NoaConfig,
    adapters: Mapping[str, Any],
    local: Mapping[str, Any],
    health: Any,
    replica: str,
) -> LinkedRouter:
    """The Router deployment's router: every provider behind its deployment's handle."""
    providers: dict[str, Provider] = {
        n: RemoteProvider(n, config.providers[n].kind, h) for n, h in adapters.items()
    }
    providers.update(remote_local(local))
    return linked_router(config, providers, RemoteHealth(health), replica)
