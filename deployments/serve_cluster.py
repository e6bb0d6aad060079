"""A real local Ray cluster (``ray start --head``) with NOA deployed by ``serve deploy``.

This is the path a user takes: the fast-ingress variables in the cluster's environment, then
``serve deploy`` of a copy of the repository's ``serve_config.yaml`` (only the port changed).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from deployments.local import FAST_SERVE_ENV, kill_stray_haproxy
from noa.testing.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


MARKER = "NOA_TEST_CLUSTER"
# Serve's defaults are 30000-31000 (HTTP) and 40000-41000 (gRPC); these sit just above them
DIRECT_INGRESS_PORTS = {
    "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "31001",
    "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "32000",
    "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": "41001",
    "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": "42000",
}


def _without(env: Mapping[str, str], names: set[str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in names}


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class ServeCluster:
    def __init__(
        self, env: dict[str, str], master_key: str, args: dict[str, Any] | None = None
    ) -> None:
        self.args = args or {}
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.http_port = free_port()
        self.master_key = master_key
        self.tmp = Path(tempfile.mkdtemp(prefix="noa-e2e-", dir="/tmp"))
        # Ray 2.60 token auth with a token of this cluster's own: `ray start` refuses token mode
        # without one, and a fresh machine has none (~/.ray/auth_token is made by ray.init).
        self.token_path = self.tmp / "auth_token"
        self.token_path.write_text(secrets.token_hex(32))
        self.token_path.chmod(0o600)
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)}
        self.env = {
            **_without(os.environ, {"RAY_AUTH_TOKEN"}),
            **FAST_SERVE_ENV,
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
            # replicas' direct-ingress ports of their own: Serve hands them out from the bottom
            # of one fixed range per cluster, so a second cluster on this machine (`noa serve`,
            # started by a test) would hand out the same ones
            **DIRECT_INGRESS_PORTS,
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            **self.auth,
            "RAY_USAGE_STATS_ENABLED": "0",
            "NOA_MASTER_KEY": master_key,
            MARKER: str(self.tmp),  # inherited by every process of this cluster
            **env,
        }

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def driver_env(self) -> dict[str, str]:
        """For other Ray drivers: the cluster's address, never the fast-ingress variables."""
        env = _without(os.environ, {*FAST_SERVE_ENV, "RAY_AUTH_TOKEN"})
        return {**env, "RAY_ADDRESS": self.address, **self.auth}

    def _run(self, *args: str, timeout: float = 180) -> str:
        result = subprocess.run(
            args, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def serve_config(self) -> Path:
        config: dict[str, Any] = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
        config["http_options"]["port"] = self.http_port
        app = config["applications"][0]
        app["args"] = deep_merge(app.get("args") or {}, self.args)
        path = self.tmp / "serve_config.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self) -> ServeCluster:
        self._run(
            str(BIN / "ray"),
            "start",
            "--head",
            f"--port={self.gcs_port}",
            f"--dashboard-port={self.dashboard_port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            f"--temp-dir={self.tmp}",
            "--disable-usage-stats",
        )
        self._run(str(BIN / "serve"), "deploy", str(self.serve_config()), "-a", self.dashboard)
        self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        headers = {"authorization": f"Bearer {self.master_key}"}
        last = ""
        while time.monotonic() < deadline:
            try:
                status = self._run(str(BIN / "serve"), "status", "-a", self.dashboard, timeout=60)
                app = (yaml.safe_load(status).get("applications") or {}).get("noa") or {}
                if app.get("status") == "DEPLOY_FAILED":
                    raise RuntimeError(f"serve deploy failed:\n{status}")
                if app.get("status") == "RUNNING":
                    response = httpx.get(f"{self.url}/v1/models", headers=headers, timeout=10)
                    if response.status_code == 200 and self._every_gateway_answers(deadline):
                        return
                last = status
            except (httpx.HTTPError, RuntimeError) as e:
                if "DEPLOY_FAILED" in str(e):
                    raise
                last = str(e)
            time.sleep(1)
        raise TimeoutError(f"NOA did not come up on {self.url}:\n{last}")

    def gateway_replicas(self) -> int:
        gateway = (self.args.get("deployment") or {}).get("gateway") or {}
        return int(gateway.get("num_replicas", 1))

    def _every_gateway_answers(self, deadline: float) -> bool:
        """Whether each Gateway replica serves through the front door yet (``/status`` names
        the replica that answered): a replica started later may not be behind the proxy at
        once, and tests that need several replicas would see only one."""
        seen: set[str] = set()
        while time.monotonic() < deadline:
            status = httpx.get(f"{self.url}/status", timeout=10)
            if status.status_code == 200:
                seen.add(status.json()["replica"])
            if len(seen) >= self.gateway_replicas():
                return True
            time.sleep(0.05)
        return False

    def _processes(self) -> list[psutil.Process]:
        """This cluster's processes (not ``ray stop``, which stops every cluster here)."""
        mine = []
        for proc in psutil.process_iter(["cmdline", "environ"]):
            try:
                cmdline = " ".join(proc.info["cmdline"] or [])
                environ = proc.info["environ"] or {}
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if str(self.tmp) in cmdline or environ.get(MARKER) == str(self.tmp):
                mine.append(proc)
        tree = {p.pid: p for p in mine}
        for proc in mine:  # agents and workers rewrite their titles and environments
            with contextlib.suppress(psutil.NoSuchProcess):
                tree.update({c.pid: c for c in proc.children(recursive=True)})
        tree.pop(os.getpid(), None)
        return list(tree.values())

    def stop(self) -> None:
        try:
            procs = self._processes()
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.terminate()
            _, alive = psutil.wait_procs(procs, timeout=10)
            for proc in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            psutil.wait_procs(alive, timeout=10)
        finally:
            kill_stray_haproxy(self.http_port)
            shutil.rmtree(self.tmp, ignore_errors=True)
