#!/usr/bin/env python3
"""Measure NOA's hot path per placement: where do cloud-provider calls run?

    .venv/bin/python scripts/bench/placement.py [--seconds 8] [--json placement.json]

For each ``deployment.hot_path`` (inline: the Gateway replica routes and calls the provider
itself; router: Gateway -> Router deployment -> OpenAIAdapter deployment, two handle hops) it
deploys NOA with ``serve deploy`` on a fresh local cluster, points ``openai/<model>`` at the fast
fake upstream on loopback, and drives non-streamed chat with wrk at 1 and 32 connections.
Prints a markdown table. Not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import MESSAGES, NOA_ARGS, machine
from loadgen import WrkResult, wrk, wrk_script
from systems import MASTER_KEY, UPSTREAM_KEY, FakeUpstream, Noa


def measure(url: str, script: Path, seconds: float) -> dict[str, WrkResult]:
    endpoint = f"{url}/v1/chat/completions"
    wrk(endpoint, script, 4, 2)  # warm up
    return {"c1": wrk(endpoint, script, 1, seconds), "c32": wrk(endpoint, script, 32, seconds)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8, help="seconds per wrk run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="noa-placement-"))
    upstream = FakeUpstream(tmp, "upstream")
    results: dict[str, dict[str, WrkResult]] = {}
    try:
        direct = wrk_script(
            tmp / "direct.lua", {"model": "bench", "messages": MESSAGES}, UPSTREAM_KEY
        )
        results["upstream directly"] = measure(upstream.base_url[:-3], direct, args.seconds)
        script = wrk_script(tmp / "noa.lua", {"model": "bench", "messages": MESSAGES}, MASTER_KEY)
        for hot_path in ("inline", "router"):
            noa = Noa(upstream.base_url, {**NOA_ARGS, "deployment": {"hot_path": hot_path}})
            try:
                print(f"placement: hot_path={hot_path}", flush=True)
                results[f"NOA hot_path={hot_path}"] = measure(noa.start(), script, args.seconds)
            finally:
                noa.stop()
    finally:
        upstream.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    floor = results["upstream directly"]["c1"].p50_ms
    print(f"\nMachine: {machine()}; {args.seconds:g} s per wrk run; non-streamed chat\n")
    print("| setup | c=1 p50 (added) | c=1 p99 | c=32 req/s | c=32 p50 / p99 | errors |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        c1, c32 = r["c1"], r["c32"]
        print(
            f"| {name} | {c1.p50_ms:.2f} ms ({c1.p50_ms - floor:+.2f}) | {c1.p99_ms:.2f} ms "
            f"| {c32.rps:.0f} | {c32.p50_ms:.1f} / {c32.p99_ms:.1f} ms "
            f"| {c1.errors + c32.errors} |"
        )
    if args.json:
        data = {name: {k: v.as_dict() for k, v in r.items()} for name, r in results.items()}
        args.json.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
