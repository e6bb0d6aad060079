#!/usr/bin/env python3
"""NOA side by side with LiteLLM's proxy and the upstream itself, in one run.

    ./scripts/bench/run.sh [--seconds 8] [--json results.json] [--skip-litellm] [--skip-local]

1. A fast fake OpenAI-compatible upstream on loopback (fixed tiny answer, JSON and SSE).
2. The same load (wrk, one thread) against: the upstream directly (the floor); NOA with its
   production settings (``serve deploy``, master key); LiteLLM's proxy (master key, one worker
   per core). Non-streamed and streamed chat at 1 and 32 connections: requests/s, p50, p99.
3. Streaming timing through each gateway with an upstream that sends a chunk every 50 ms: time
   to first byte and the worst hold of a chunk behind the upstream's schedule.
4. The bundled GGUF: tokens/s and time to first token through NOA vs llama-cpp-python directly.
Prints a markdown table and writes JSON. Not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import local_model
from loadgen import StreamTiming, WrkResult, stream_probe, wrk, wrk_script
from systems import MASTER_KEY, UPSTREAM_KEY, FakeUpstream, LiteLLM, Noa, litellm_version

MESSAGES = [{"role": "user", "content": "Say hello."}]
STREAM_WORDS = ["Hello!", " How", " can", " I", " help?"]
CHUNK_INTERVAL_MS = 50.0

# NOA as deployed in production: serve_config.yaml plus a configured model for the upstream,
# called with an API key that has limits and a budget (checked, reconciled and recorded on
# every request), the access log on. (Metrics join here as they land.)
NOA_ARGS: dict[str, Any] = {
    "models": [
        {"id": "bench", "provider": "openai", "upstream": "bench"},
        {
            "id": "local/smollm2-135m-instruct",
            "aliases": ["smollm2"],
            "provider": "local",
            "upstream": "smollm2-135m-instruct",
        },
    ],
}


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {cpu}, {mem_gib:.0f} GiB, {platform.system()}"


def api_key(url: str) -> str:
    """A key as a team would get one: limits far above the load, so nothing is refused, but
    every request is admitted, reconciled and recorded."""
    response = httpx.post(
        f"{url}/v1/admin/keys",
        json={"name": "bench", "rpm": 10_000_000, "tpm": 10_000_000_000, "budget_usd": 1e9},
        headers={"authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    )
    response.raise_for_status()
    secret: str = response.json()["key"]
    return secret


def load(
    url: str, key: str, tmp: Path, seconds: float, model: str, cache: bool = False
) -> dict[str, Any]:
    """Chat and streamed chat at 1 and 32 connections. The requests leave temperature at its
    default, so NOA's response cache passes them by (not reproducible): every one goes
    upstream. With ``cache``, also the same request with temperature 0: all cache hits."""
    chat = wrk_script(tmp / f"chat-{key[-4:]}.lua", {"model": model, "messages": MESSAGES}, key)
    stream = wrk_script(
        tmp / f"stream-{key[-4:]}.lua", {"model": model, "messages": MESSAGES, "stream": True}, key
    )
    scripts = [("chat", chat), ("stream", stream)]
    if cache:
        body = {"model": model, "messages": MESSAGES, "temperature": 0}
        scripts.append(("cache", wrk_script(tmp / f"cache-{key[-4:]}.lua", body, key)))
    endpoint = f"{url}/v1/chat/completions"
    for _, script in scripts:  # warm up connections, code paths and the cache's entry
        wrk(endpoint, script, 4, 1)
    results: dict[str, Any] = {}
    for name, script in scripts:
        for connections in (1, 32):
            results[f"{name}_c{connections}"] = wrk(endpoint, script, connections, seconds)
    return results


def probe(url: str, key: str, model: str) -> StreamTiming:
    body = {
        "model": model,
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return stream_probe(
        f"{url}/v1/chat/completions", body, key, CHUNK_INTERVAL_MS, STREAM_WORDS * 2
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="noa-bench-"))
    os.environ["NOA_HOME"] = str(tmp / "noa-home")  # NOA's SQLite file: a fresh one per run
    report: dict[str, Any] = {
        "machine": machine(),
        "seconds_per_run": args.seconds,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    upstream = FakeUpstream(tmp, "upstream")
    slow = FakeUpstream(
        tmp, "slow-upstream", "--chunks", "10", "--chunk-interval-ms", str(CHUNK_INTERVAL_MS)
    )
    systems: dict[str, Any] = {}
    timings: dict[str, StreamTiming] = {}
    try:
        print("bench: upstream directly", flush=True)
        systems["upstream"] = load(upstream.base_url[:-3], UPSTREAM_KEY, tmp, args.seconds, "bench")
        timings["upstream"] = probe(slow.base_url[:-3], UPSTREAM_KEY, "bench")

        for name, base in (("noa", upstream.base_url), ("noa-stream-timing", slow.base_url)):
            noa = Noa(base, NOA_ARGS)
            try:
                print(f"bench: starting NOA ({name})", flush=True)
                url = noa.start()
                key = api_key(url)
                if name == "noa":
                    systems["noa"] = load(url, key, tmp, args.seconds, "bench", cache=True)
                    if not args.skip_local:
                        print("bench: local model, llama-cpp-python vs NOA", flush=True)
                        local = local_model.compare(url, key, "smollm2", args.local_runs)
                        report["local_direct"], report["local_noa"] = local["direct"], local["noa"]
                else:
                    timings["noa"] = probe(url, key, "bench")
            finally:
                noa.stop()

        if not args.skip_litellm:
            report["litellm_version"] = litellm_version() or "?"
            for name, base in (
                ("litellm", upstream.base_url),
                ("litellm-stream-timing", slow.base_url),
            ):
                print(f"bench: starting LiteLLM ({name})", flush=True)
                proxy = LiteLLM(tmp, base)
                try:
                    if name == "litellm":
                        systems["litellm"] = load(proxy.url, MASTER_KEY, tmp, args.seconds, "bench")
                    else:
                        timings["litellm"] = probe(proxy.url, MASTER_KEY, "bench")
                finally:
                    proxy.stop()
    finally:
        upstream.stop()
        slow.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report["systems"] = {
        name: {k: v.as_dict() for k, v in runs.items()} for name, runs in systems.items()
    }
    report["stream_timing"] = {name: t.as_dict() for name, t in timings.items()}
    return report


def table(report: dict[str, Any]) -> str:
    systems = report["systems"]
    floor = systems["upstream"]["chat_c1"]["p50_ms"]
    names = {
        "upstream": "upstream directly",
        "noa": "NOA",
        "litellm": f"LiteLLM {report.get('litellm_version', '')}".strip(),
    }
    lines = [
        "| system | chat c=1 p50 (added) | chat c=1 p99 | chat c=32 req/s | chat c=32 p50 / p99 "
        "| stream c=1 p50 | stream c=32 req/s | TTFB (50 ms chunks) | worst chunk hold "
        "| errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in systems.items():
        chat1, chat32 = WrkResult(**runs["chat_c1"]), WrkResult(**runs["chat_c32"])
        stream1, stream32 = WrkResult(**runs["stream_c1"]), WrkResult(**runs["stream_c32"])
        timing = report["stream_timing"].get(name)
        errors = sum(WrkResult(**r).errors for r in runs.values())
        lines.append(
            f"| {names.get(name, name)} | {chat1.p50_ms:.2f} ms ({chat1.p50_ms - floor:+.2f}) "
            f"| {chat1.p99_ms:.2f} ms | **{chat32.rps:.0f}** "
            f"| {chat32.p50_ms:.1f} / {chat32.p99_ms:.1f} ms | {stream1.p50_ms:.2f} ms "
            f"| {stream32.rps:.0f} | {timing['ttfb_ms']:.1f} ms | {timing['max_hold_ms']:.1f} ms "
            f"| {errors} |"
            if timing
            else f"| {names.get(name, name)} | {chat1.p50_ms:.2f} ms |"
        )
    if "litellm" in systems and "noa" in systems:
        ratio = systems["noa"]["chat_c32"]["rps"] / systems["litellm"]["chat_c32"]["rps"]
        lines.append(f"\nNOA / LiteLLM throughput at 32 connections: **{ratio:.1f}x**")
    if "local_noa" in report and "local_direct" in report:
        d, n = report["local_direct"], report["local_noa"]
        lines += [
            "",
            "| local model (SmolLM2-135M Q4_1, streamed, 128 tokens) | tokens/s "
            "| time to first token |",
            "|---|---|---|",
            f"| llama-cpp-python directly | {d['tokens_per_s']:.1f} | {d['ttft_ms']:.1f} ms |",
            f"| through NOA | {n['tokens_per_s']:.1f} "
            f"({n['tokens_per_s'] / d['tokens_per_s']:.2f}x) | {n['ttft_ms']:.1f} ms "
            f"({n['ttft_ms'] - d['ttft_ms']:+.1f}) |",
        ]
    if "cache_c1" in systems.get("noa", {}):
        hit1 = WrkResult(**systems["noa"]["cache_c1"])
        hit32 = WrkResult(**systems["noa"]["cache_c32"])
        lines += [
            "",
            "| NOA cache hit (same request, temperature 0) | c=1 p50 | c=1 p99 | c=32 req/s "
            "| c=32 p50 / p99 | errors |",
            "|---|---|---|---|---|---|",
            f"| end to end, L1 hit | **{hit1.p50_ms:.2f} ms** | {hit1.p99_ms:.2f} ms "
            f"| {hit32.rps:.0f} | {hit32.p50_ms:.1f} / {hit32.p99_ms:.1f} ms "
            f"| {hit1.errors + hit32.errors} |",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8, help="seconds per wrk run")
    parser.add_argument("--local-runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"))
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--skip-local", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    report = run(args)
    report["duration_s"] = round(time.monotonic() - started, 1)
    args.json.write_text(json.dumps(report, indent=2))
    print(
        f"\nMachine: {report['machine']}; {args.seconds:g} s per wrk run; "
        f"whole run {report['duration_s']:.0f} s; JSON in {args.json}\n"
    )
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
