"""What a Gateway replica checks as it starts: the start-up guards (``noa/config/guards.py``)
over the facts of the Ray cluster it runs in.

``serve deploy`` takes the HTTP address from the Serve config (``http_options.host``), not from
NOA's, so the Gateway asks Serve's controller where its HTTP servers listen; and it counts the
live nodes that could host a Gateway replica.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ray
from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
from ray.serve.config import ProxyLocation

from noa.config import NoaConfig
from noa.config.guards import check_public_listen, check_shared_database


async def serve_http_host() -> str | None:
    """Where Serve's HTTP servers listen: its proxies and, with direct ingress, the ingress
    replicas themselves (the same ``http_options``); None when HTTP is disabled."""
    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    options = await controller.get_http_config.remote()
    location = await controller.get_proxy_location.remote()
    if location == ProxyLocation.Disabled:
        return None
    host: str | None = options.host
    return host


def nodes_for(num_cpus: float, nodes: list[Mapping[str, Any]]) -> int:
    """How many of ``nodes`` (``ray.nodes()``) are alive with ``num_cpus`` CPUs to offer."""
    return sum(
        1 for n in nodes if n.get("Alive") and n.get("Resources", {}).get("CPU", 0.0) >= num_cpus
    )


async def check_where_served(config: NoaConfig) -> None:
    """Raise ``ConfigError`` (the replica does not start) when a guard refuses."""
    check_public_listen(config, await serve_http_host())
    check_shared_database(config, nodes_for(config.deployment.gateway.num_cpus, ray.nodes()))
