"""``noa serve``: a local Ray cluster running NOA in the foreground until Ctrl-C."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from noa.config import NoaConfig

logger = logging.getLogger("noa.serve")

# Measured on 2-core machines (README): ~4x the default throughput. They must be in the
# environment of the processes Ray starts, so they are set before ray.init.
FAST_SERVE_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # One local node: nothing to drain behind HAProxy, so Ctrl-C need not wait 30 s.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}


def _wait_for_signal() -> None:
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop.is_set():
        stop.wait(1.0)


def kill_stray_haproxy(port: int) -> list[int]:
    """Kill HAProxy processes still listening on ``port`` after Ray stopped.

    Ray 2.60 starts HAProxy as a child of an actor; when Ray stops, a reloaded HAProxy can be
    left behind, holding the port, so the next start fails. Returns the PIDs it killed.
    """
    import psutil

    killed = []
    for proc in psutil.process_iter(["name"]):
        try:
            if "haproxy" not in (proc.info["name"] or ""):
                continue
            ports = {c.laddr.port for c in proc.net_connections("tcp") if c.status == "LISTEN"}
            if port in ports:
                proc.kill()
                killed.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return killed


WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def _overlaps(host: str, listening: str) -> bool:
    """Whether a server binding ``host`` would collide with one listening on ``listening``."""
    if host in WILDCARDS or listening in WILDCARDS:
        return True
    loopback = {"localhost": "127.0.0.1"}
    return loopback.get(host, host) == listening


def _accepts(host: str, port: int) -> bool:
    """Whether a connection to ``host:port`` is accepted (a wildcard host: its loopback)."""
    target = "::1" if host == "::" else "127.0.0.1" if host in WILDCARDS else host
    with socket.socket(socket.AF_INET6 if ":" in target else socket.AF_INET) as s:
        s.settimeout(1.0)
        return s.connect_ex((target, port)) == 0


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` (so HAProxy could not have it).

    It looks for a listening socket, not for a port it can bind: the connections of a run
    stopped a moment ago wait in TIME_WAIT on the port for up to a minute, and they do not
    keep a server from binding it (servers set ``SO_REUSEADDR``), so they must not count.
    """
    import psutil

    try:
        listening = [
            c.laddr.ip
            for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        ]
    except psutil.AccessDenied:  # the socket table is not readable here: ask the port
        return _accepts(host, port)
    return any(_overlaps(host, ip) for ip in listening)


def _list_models(url: str, key: str | None) -> dict[str, Any]:
    """GET /v1/models through the HTTP front door: proves the whole path is up."""
    request = urllib.request.Request(f"{url}/v1/models")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(
            f"NOA started, but GET {url}/v1/models answered HTTP {e.code} "
            f"({e.read()[:200]!r}): is another server listening on that port?"
        ) from e


def serve_foreground(config: NoaConfig, *, fast: bool = True) -> int:
    """Start Ray and the app, print where it listens, block until a signal, shut down."""
    if fast:
        for key, value in FAST_SERVE_ENV.items():
            os.environ.setdefault(key, value)
    import ray
    from ray import serve

    from deployments.app import build

    if port_in_use(config.server.host, config.server.port):
        print(
            f"noa: {config.server.host}:{config.server.port} is already in use; "
            "stop what listens there or pass --port",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    # a private local instance: never attach to a Ray cluster that happens to run here
    ray.init(
        address="local",
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    try:
        serve.start(http_options={"host": config.server.host, "port": config.server.port})
        d = config.deployment
        serve.run(build(config), name=d.app_name, route_prefix=d.route_prefix)
        url = f"http://{config.server.host}:{config.server.port}"
        master = config.auth.master_key()
        secret = master.get_secret_value() if master else None
        models = [m["id"] for m in _list_models(url, secret)["data"]]
        banner = (
            f"NOA is ready at {url} ({time.monotonic() - started:.1f}s)\n"
            f"  OpenAI base URL: {url}/v1    API docs: {url}/docs\n"
            f"  models: {', '.join(models) or '(none)'}\n"
            "Press Ctrl-C to stop."
        )
        print(banner, flush=True)  # one write, so a reader never sees half of it
        _wait_for_signal()
        print("Shutting down NOA...", flush=True)
        serve.shutdown()
    finally:
        ray.shutdown()
        kill_stray_haproxy(config.server.port)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(serve_foreground(NoaConfig()))
