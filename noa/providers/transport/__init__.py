"""How a cloud provider's requests reach its upstream: two transports, one interface.

``DirectTransport`` (``direct.py``, the default) sends the JSON over NOA's keep-alive HTTP/1.1
pool (``pool.py``, capped per origin, over ``http1.py``), with the base URL, auth and protocol
headers taken from the official SDK client built from the same configuration.
``SdkTransport`` (``sdk.py``) sends through the SDK client itself (``client.post``), for
deployments that want the SDK's own HTTP stack (custom ``http_client``, proxies, SDK retries).
An upstream that the environment sends through a proxy (``HTTPS_PROXY``, ``HTTP_PROXY`` or
``ALL_PROXY``, and not exempted by ``NO_PROXY``; see ``proxies.py``) always goes through the
SDK transport, which honours them.

Why two: measured on 2 cores against a loopback upstream, one chat call costs about 60 us of
CPU on ``http1.py``, 240 us on raw aiohttp, 1,205 us through the SDK's generic ``post``
(aiohttp backend) and 3,082 us through ``chat.completions.create`` (default httpx2 backend).
A gateway replica's whole Serve ingress costs 420 us, so the SDK's request layer alone would
cap NOA below its throughput target.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from noa.config import CloudProviderConfig
from noa.providers.transport.direct import DirectTransport, Transport
from noa.providers.transport.proxies import proxy_for, shown
from noa.providers.transport.sdk import SdkTransport

__all__ = ["DirectTransport", "SdkTransport", "Transport", "from_config"]
logger = logging.getLogger("noa.providers")


def from_config(
    provider: str,
    sdk: ModuleType,
    client_class: Callable[..., Any],
    config: CloudProviderConfig,
    api_key: str,
    base_url: str | None,
    environ: Mapping[str, str] | None = None,
) -> Transport:
    """The configured transport, over the official SDK client (``client_class`` of ``sdk``)
    built from the provider's config: its URL, auth and protocol headers either way; the SDK
    transport whatever the config says when ``environ`` (the process's) proxies the upstream."""
    client = client_class(
        api_key=api_key,
        base_url=base_url,
        timeout=config.timeout_s,
        max_retries=config.max_retries,
    )
    if config.transport == "sdk":
        return SdkTransport(provider, client, sdk)
    url = str(client.base_url)
    proxy = proxy_for(url, os.environ if environ is None else environ)
    if proxy is not None:
        logger.info(
            "provider '%s' goes through the proxy %s (from the environment): sent with the"
            " SDK's HTTP stack, which honours it, rather than NOA's direct transport",
            provider,
            shown(proxy),
        )
        return SdkTransport(provider, client, sdk)
    return DirectTransport.from_sdk_client(
        provider,
        client,
        config.timeout_s,
        max_connections=config.max_connections,
        max_body_bytes=config.max_response_bytes,
    )
