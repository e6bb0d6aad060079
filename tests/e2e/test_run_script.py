"""``./scripts/run.sh`` (``noa serve``) brings NOA up, answers, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from noa.testing.ports import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_run_script_serves_the_local_model_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "NOA_MASTER"))}
    env.update(
        {
            # a home of its own, as on a fresh machine: not the suite's database, which the
            # shared cluster (master key on, keys made by the tests) uses
            "NOA_HOME": str(tmp_path / "noa-home"),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
    )
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "run.sh"), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "Press Ctrl-C to stop." in line:  # the last line of the ready banner
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(300), "".join(lines[-50:]) + listeners(port)
        output = "".join(lines)
        assert f"http://127.0.0.1:{port}" in output
        assert "local/smollm2-135m-instruct" in output
        assert "auth is off" in output

        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=120
        )
        messages = [
            {"role": "system", "content": "You are a helpful AI assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ]
        answer = client.chat.completions.create(
            model="smollm2", messages=messages, temperature=0, max_tokens=30
        )
        assert "Paris" in answer.choices[0].message.content
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="smollm2", messages=messages, temperature=0, max_tokens=30, stream=True
            )
            if c.choices
        )
        assert "Paris" in streamed
        with socket.socket() as s:  # without a master key NOA listens on loopback only
            s.settimeout(2)
            outside = socket.gethostbyname(socket.gethostname())
            if outside != "127.0.0.1":
                assert s.connect_ex((outside, port)) != 0
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert code == 0, "".join(lines[-30:])
    assert "Shutting down NOA" in "".join(lines)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
        except httpx.HTTPError:
            break
        time.sleep(0.5)
    else:
        pytest.fail("something still answers on the port after shutdown")


def listeners(port: int) -> str:
    """Who listens on ``port`` (a failure's context: another server answering there)."""
    import psutil

    found = []
    for c in psutil.net_connections("tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
            try:
                who = " ".join(psutil.Process(c.pid).cmdline())[:300] if c.pid else "?"
            except psutil.Error:
                who = "?"
            found.append(f"\n  {c.laddr.ip}:{port} pid {c.pid}: {who}")
    return f"\nlisteners on {port}:" + ("".join(found) or " none")
