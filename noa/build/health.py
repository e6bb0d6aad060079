"""The app's health center (the HealthActor's core) built from a ``NoaConfig``: a probe per
provider, the breaker hub, its relay through Redis when configured, the metrics board."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from noa.build.providers import cloud_providers
from noa.config import NoaConfig
from noa.observability.metrics import MetricsBoard
from noa.providers.base import Provider
from noa.providers.remote import RemoteProvider
from noa.routing.breakers.hub import BreakerHub
from noa.routing.breakers.redis import RedisBreakerRelay, RelayOutbox
from noa.routing.health import HealthMonitor
from noa.routing.health_center import HealthParts

Environ = Mapping[str, str]


def health_parts(
    config: NoaConfig, local: Mapping[str, Any], environ: Environ | None = None
) -> HealthParts:
    """``local``: the LlamaCpp deployments' handles (probed through them)."""
    providers: dict[str, Provider] = dict(cloud_providers(config, environ))
    for name, handle in local.items():
        providers[name] = RemoteProvider(name, "llamacpp", handle)
    monitor = HealthMonitor({n: p.check for n, p in providers.items()})
    interval = config.deployment.health_check_interval_s
    redis_url = config.redis.url(environ)
    if not (redis_url and config.routing.breaker.share_through_redis):
        return HealthParts(monitor, BreakerHub(), MetricsBoard(), interval)
    # other apps on this Redis share the breakers too: the hub's transitions go out through
    # the relay's outbox, and the relay reports theirs to the hub
    outbox = RelayOutbox()
    hub = BreakerHub(on_report=outbox.put)
    relay = RedisBreakerRelay(hub, redis_url, origin=uuid.uuid4().hex, outbox=outbox)
    return HealthParts(monitor, hub, MetricsBoard(), interval, relay)
