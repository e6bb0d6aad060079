"""Start-up guards: configurations NOA refuses to start with where they would be unsafe.

Each guard is a plain function of the configuration and of facts about where NOA runs (the
address its HTTP servers listen on, how many nodes can host its replicas), which the caller
gathers: ``noa serve`` (``noa/cli``) before it starts Ray, the Gateway replica
(``deployments/startup.py``) as it starts. A refusal is a ``ConfigError`` that names what to
set.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from noa.config.access import ALLOW_PUBLIC_ENV
from noa.config.root import ConfigError, NoaConfig

Environ = Mapping[str, str]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_public_listen(
    config: NoaConfig, host: str | None, environ: Environ | None = None
) -> None:
    """Refuse to listen beyond loopback with auth off, unless the operator opted in.

    ``host`` is where the HTTP servers listen (``None``: no HTTP server at all). Auth is on
    with a master key, or with ``auth.required`` (keys or JWTs only).
    """
    auth = config.auth
    if host is None or is_loopback(host) or auth.is_on(environ):
        return
    if auth.allows_public_without_auth(environ):
        return
    shown = host or "every interface"
    raise ConfigError(
        f"refusing to listen on {shown} with auth off: set {auth.master_key_env} to enable "
        "auth, or listen on 127.0.0.1; to serve other machines without auth on purpose, set "
        f"auth.allow_unauthenticated_public: true (or {ALLOW_PUBLIC_ENV}=1)"
    )


def check_shared_database(config: NoaConfig, nodes: int, environ: Environ | None = None) -> None:
    """Refuse a database that is a file on each node when replicas can run on several.

    ``nodes`` is how many live nodes can host a Gateway replica. SQLite keeps keys, teams and
    usage in a file of the node the replica runs on: a key created through one node would be
    a 401 on every other, and usage and budgets would split the same way.
    """
    url = config.database.url(environ)
    if nodes <= 1 or not url.startswith("sqlite:"):
        return
    raise ConfigError(
        f"refusing to start: {nodes} Ray nodes can host NOA's Gateway replicas, but the "
        f"database is SQLite ({url.removeprefix('sqlite:///')}), a file on each node, so a key "
        "created through one node would be unknown (401) on the others: set "
        f"{config.database.url_env} to a database every node shares (postgresql://...) in "
        "the environment of every node"
    )
