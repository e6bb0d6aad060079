"""The systems under test: the fake upstream, NOA on Ray Serve, LiteLLM's proxy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from deployments.serve_cluster import ServeCluster
from noa.testing.ports import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
UPSTREAM_KEY = "bench-upstream-key"
MASTER_KEY = "sk-bench-master-key"
LITELLM_VENV = ROOT / ".noa" / "bench" / "litellm-venv"
LITELLM_REQUIREMENT = "litellm[proxy]==1.106.*"


def wait_http(url: str, timeout_s: float, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s")


class Process:
    """A child process in its own session, stopped with everything it started."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            args,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class FakeUpstream(Process):
    def __init__(self, tmp: Path, name: str, *args: str) -> None:
        self.port = free_port()
        super().__init__(
            [sys.executable, str(HERE / "fake_upstream.py"), "--port", str(self.port), *args],
            tmp / f"{name}.log",
        )
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        wait_http(f"{self.base_url}/models", 20)


class Noa:
    """NOA deployed with `serve deploy` (fast-ingress settings, master key on)."""

    def __init__(self, upstream: str, args: dict[str, Any]) -> None:
        env = {"OPENAI_API_KEY": UPSTREAM_KEY, "OPENAI_BASE_URL": upstream}
        self.cluster = ServeCluster(env, MASTER_KEY, args)

    def start(self) -> str:
        self.cluster.start()
        return self.cluster.url

    def stop(self) -> None:
        self.cluster.stop()


def ensure_litellm() -> Path:
    """LiteLLM's proxy in its own throwaway venv (never a NOA dependency)."""
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        print("bench: installing LiteLLM into .noa/bench/litellm-venv (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run(
            [
                str(LITELLM_VENV / "bin" / "pip"),
                "install",
                "-q",
                "--disable-pip-version-check",
                LITELLM_REQUIREMENT,
            ],
            check=True,
            stderr=subprocess.DEVNULL,
        )
    return binary


def litellm_version() -> str:
    ensure_litellm()
    out = subprocess.run(
        [
            str(LITELLM_VENV / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


class LiteLLM(Process):
    """LiteLLM's proxy for the same upstream: master key, one worker per core."""

    def __init__(self, tmp: Path, upstream: str) -> None:
        binary = ensure_litellm()
        self.port = free_port()
        config = {
            "model_list": [
                {
                    "model_name": "bench",
                    "litellm_params": {
                        "model": "openai/bench",
                        "api_base": upstream,
                        "api_key": UPSTREAM_KEY,
                    },
                }
            ],
            "general_settings": {"master_key": MASTER_KEY},
        }
        path = tmp / "litellm.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {
            **os.environ,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no network: use the bundled price map
            "LITELLM_TELEMETRY": "False",
            "LITELLM_LOG": "ERROR",
        }
        super().__init__(
            [
                str(binary),
                "--config",
                str(path),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--num_workers",
                str(os.cpu_count() or 1),
            ],
            tmp / "litellm.log",
            env,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_http(f"{self.url}/health/liveliness", 180)
