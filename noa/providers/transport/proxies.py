"""Whether the environment sends an upstream through a proxy: ``HTTPS_PROXY``, ``HTTP_PROXY``,
``ALL_PROXY`` and ``NO_PROXY``, read as ``urllib.request`` reads them (either case, the lower
case one winning; ``NO_PROXY`` names hosts, domain suffixes, ``host:port`` or ``*``).

NOA's direct transport speaks to the upstream itself and has no proxy support; an upstream the
environment proxies goes through the SDK's HTTP stack instead, which honours these variables
(``transport/__init__.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit


def environment_proxies(environ: Mapping[str, str]) -> dict[str, str]:
    """``{"https": ..., "http": ..., "all": ..., "no": ...}`` from ``<scheme>_proxy``
    variables: any case first, then the lower case ones over them (an empty one removes it)."""
    proxies: dict[str, str] = {}
    for name, value in environ.items():
        if value and name.lower().endswith("_proxy"):
            proxies[name[:-6].lower()] = value
    for name, value in environ.items():
        if name.endswith("_proxy"):
            if value:
                proxies[name[:-6]] = value
            else:
                proxies.pop(name[:-6], None)
    return proxies


def proxy_for(url: str, environ: Mapping[str, str]) -> str | None:
    """The proxy ``environ`` sends ``url`` through (its scheme's, else ``all``), or None: none
    is set, or ``no_proxy`` exempts the host."""
    proxies = environment_proxies(environ)
    parts = urlsplit(url)
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or not parts.hostname:
        return None
    if exempt(parts.hostname, parts.port, proxies.get("no", "")):
        return None
    return proxy


def exempt(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``no_proxy`` names ``host``: ``*``, the host itself (or ``host:port``), or a
    domain it is in (a leading dot or not)."""
    if no_proxy.strip() == "*":
        return True
    host = host.lower()
    with_port = host if port is None else f"{host}:{port}"
    for name in no_proxy.split(","):
        name = name.strip().lstrip(".").lower()
        if not name:
            continue
        if name in (host, with_port) or host.endswith("." + name) or with_port.endswith("." + name):
            return True
    return False


def shown(proxy: str) -> str:
    """A proxy URL fit for a log line: its credentials left out."""
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"
