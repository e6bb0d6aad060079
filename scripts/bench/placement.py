#!/usr/bin/env python3
"""Measure NOA's hot path per placement: where do cloud-provider calls run?

    .venv/bin/python scripts/bench/placement.py [--duration 10]

For each ``deployment.hot_path`` (inline: the Gateway replica routes and calls the provider SDK
itself; router: Gateway -> Router deployment -> OpenAIAdapter deployment, two handle hops) it
deploys NOA with ``serve deploy`` on a fresh local cluster, points ``openai/<model>`` at a fake
upstream on loopback, and drives it with wrk at 1 and 32 connections. Prints a markdown table.
Not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from noa.testing.fake_upstream import FakeUpstream
from noa.testing.serve_cluster import ServeCluster

KEY = "bench-master-key"
UPSTREAM_KEY = "bench-upstream-key"
BODY = {"model": "openai/bench", "messages": [{"role": "user", "content": "hi"}]}


def wrk_script(path: Path, body: dict[str, object], key: str) -> Path:
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    )
    return path


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url: str, script: Path, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def measure(url: str, script: Path, seconds: int) -> dict[str, dict[str, float]]:
    wrk(url, script, 4, 2)  # warm up
    return {"c1": wrk(url, script, 1, seconds), "c32": wrk(url, script, 32, seconds)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="noa-bench-"))
    fake = FakeUpstream(api_key=UPSTREAM_KEY).start()
    env = {"OPENAI_API_KEY": UPSTREAM_KEY, "OPENAI_BASE_URL": f"{fake.base_url}/v1"}
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        direct = wrk_script(tmp / "direct.lua", {**BODY, "model": "bench"}, UPSTREAM_KEY)
        results["upstream direct"] = measure(
            f"{fake.base_url}/v1/chat/completions", direct, args.duration
        )
        script = wrk_script(tmp / "noa.lua", BODY, KEY)
        for hot_path in ("inline", "router"):
            cluster = ServeCluster(env, KEY, {"deployment": {"hot_path": hot_path}})
            try:
                cluster.start()
                results[f"NOA hot_path={hot_path}"] = measure(
                    f"{cluster.url}/v1/chat/completions", script, args.duration
                )
            finally:
                cluster.stop()
    finally:
        fake.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    floor = results["upstream direct"]["c1"]["p50_ms"]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    cores = os.cpu_count()
    print(f"\nMachine: {cores} cores, {cpu}; {args.duration}s per wrk run; non-streamed chat\n")
    print(
        "| setup | c=1 p50 ms (added) | c=1 p99 ms | c=32 req/s | c=32 p50 ms | c=32 p99 ms "
        "| errors |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        added = r["c1"]["p50_ms"] - floor
        print(
            f"| {name} | {r['c1']['p50_ms']:.2f} ({added:+.2f}) | {r['c1']['p99_ms']:.2f} | "
            f"{r['c32']['rps']:.0f} | {r['c32']['p50_ms']:.2f} | {r['c32']['p99_ms']:.2f} | "
            f"{r['c1']['errors'] + r['c32']['errors']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
