#!/usr/bin/env python3
"""The job system's benchmark, one run: batch throughput against synchronous throughput,
enqueue-to-result latency, and the JobRunner's memory on a large batch file.

    ./scripts/bench/jobs.sh [--lines 10000] [--file-mb 100] [--seconds 8] [--json F]

On NOA deployed with ``serve deploy`` (serve_config.yaml, master key, a bench API key with
limits far above the load) in front of the fast fake upstream on loopback:
1. synchronous chat at 32 connections (wrk, one thread): req/s;
2. one job at a time on the idle system, 30 times: the time from ``POST /v1/jobs`` to the
   result in hand (a long poll, ``GET /v1/jobs/{id}?wait=30``), and the store's own created ->
   finished;
3. a ``--lines`` batch (official ``openai`` client: files.create, batches.create, retrieve until
   completed): lines/s from creation to completion, and its ratio to (1)'s req/s;
4. a ``--file-mb`` batch file (lines padded to ~10 KB): the JobRunner replica's RSS sampled
   while it is validated and run (start, peak, end).
Prints a markdown table and writes JSON. Not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import openai
from bench import MESSAGES, NOA_ARGS, api_key, machine
from loadgen import wrk, wrk_script
from systems import FakeUpstream, Noa

JOB_ARGS: dict[str, Any] = {**NOA_ARGS, "jobs": {"concurrency": 256, "poll_s": 0.5}}
FINAL = {"completed", "failed", "expired", "cancelled"}


def batch_file(path: Path, lines: int, pad: int = 0) -> int:
    with path.open("w") as out:
        for i in range(lines):
            content = "Say hello." + (" x" * (pad // 2) if pad else "")
            body = {"model": "bench", "messages": [{"role": "user", "content": content}]}
            out.write(
                json.dumps(
                    {
                        "custom_id": f"r{i}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": body,
                    }
                )
                + "\n"
            )
    return path.stat().st_size


def run_batch(client: openai.OpenAI, path: Path, timeout_s: float = 3600) -> dict[str, Any]:
    started = time.perf_counter()
    with path.open("rb") as f:
        uploaded = client.files.create(file=(path.name, f), purpose="batch")
    uploaded_s = time.perf_counter() - started
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    created = time.perf_counter()
    while batch.status not in FINAL and time.perf_counter() - created < timeout_s:
        time.sleep(0.25)
        batch = client.batches.retrieve(batch.id)
    took = time.perf_counter() - created
    counts = batch.request_counts
    total = counts.total if counts else 0
    return {
        "status": batch.status,
        "lines": total,
        "completed": counts.completed if counts else 0,
        "failed": counts.failed if counts else 0,
        "upload_s": round(uploaded_s, 2),
        "seconds": round(took, 2),
        "lines_per_s": round(total / took, 1) if took else 0.0,
    }


def single_jobs(url: str, key: str, runs: int = 30) -> dict[str, float]:
    headers = {"authorization": f"Bearer {key}"}
    seen: list[float] = []
    stored: list[float] = []
    queued: list[float] = []
    body = {"endpoint": "/v1/chat/completions", "body": {"model": "bench", "messages": MESSAGES}}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        for _ in range(runs + 3):  # the first three warm up
            time.sleep(0.3)  # idle: the runner is waiting, not mid-burst
            started = time.perf_counter()
            job = http.post("/v1/jobs", json=body).json()
            while job["status"] not in FINAL | {"dead"}:  # a long poll: no busy polling
                job = http.get(f"/v1/jobs/{job['id']}", params={"wait": 30}).json()
            seen.append((time.perf_counter() - started) * 1000)
            stored.append((job["finished_at"] - job["created_at"]) * 1000)
            queued.append((job["started_at"] - job["created_at"]) * 1000)
    seen, stored, queued = seen[3:], stored[3:], queued[3:]
    return {
        "p50_ms": round(statistics.median(seen), 1),
        "p90_ms": round(statistics.quantiles(seen, n=10)[-1], 1),
        "stored_p50_ms": round(statistics.median(stored), 1),
        "queued_p50_ms": round(statistics.median(queued), 1),
    }


def runner_pids() -> list[int]:
    """The JobRunner replicas' worker processes (their command line names the actor)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"JobRunner" in cmd:
            pids.append(int(proc.name))
    return pids


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssSampler(threading.Thread):
    def __init__(self, pids: list[int], every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pids, self.every_s = pids, every_s
        self.samples: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(OSError):  # a replica that just went away
                self.samples.append(sum(rss_mib(p) for p in self.pids))
            self.done.wait(self.every_s)

    def summary(self) -> dict[str, float]:
        s = self.samples or [0.0]
        return {
            "start_mib": round(s[0], 1),
            "peak_mib": round(max(s), 1),
            "end_mib": round(s[-1], 1),
            "samples": len(s),
        }


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="noa-bench-jobs-"))
    os.environ["NOA_HOME"] = str(tmp / "noa-home")
    report: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    upstream = FakeUpstream(tmp, "upstream")
    noa = Noa(upstream.base_url, JOB_ARGS)
    try:
        print("bench-jobs: starting NOA", flush=True)
        url = noa.start()
        key = api_key(url)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=2, timeout=600)
        print("bench-jobs: synchronous chat at c=32", flush=True)
        script = wrk_script(tmp / "chat.lua", {"model": "bench", "messages": MESSAGES}, key)
        wrk(f"{url}/v1/chat/completions", script, 4, 1)
        sync = wrk(f"{url}/v1/chat/completions", script, 32, args.seconds)
        report["sync_c32"] = sync.as_dict()
        print("bench-jobs: single jobs on the idle system", flush=True)
        report["single_job"] = single_jobs(url, key)
        print(f"bench-jobs: a {args.lines}-line batch", flush=True)
        path = tmp / "batch.jsonl"
        batch_file(path, args.lines)
        report["batch"] = run_batch(client, path)
        report["batch"]["ratio_to_sync"] = round(report["batch"]["lines_per_s"] / sync.rps, 2)
        lines = max(1, args.file_mb * 100)  # ~10 KB a line
        print(f"bench-jobs: a {args.file_mb} MB batch file ({lines} lines)", flush=True)
        big = tmp / "big.jsonl"
        size = batch_file(big, lines, pad=10_000)
        sampler = RssSampler(runner_pids())
        sampler.start()
        try:
            report["big_batch"] = run_batch(client, big) | {"file_mb": round(size / 2**20, 1)}
        finally:
            sampler.done.set()
            sampler.join()
        report["big_batch"]["runner_rss"] = sampler.summary()
    finally:
        noa.stop()
        upstream.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def table(r: dict[str, Any]) -> str:
    b, big, one = r["batch"], r["big_batch"], r["single_job"]
    rss = big["runner_rss"]
    rows = [
        "| measure | value | target |",
        "|---|---|---|",
        f"| sync chat c=32 | {r['sync_c32']['rps']:.0f} req/s | |",
        f"| {b['lines']}-line batch | {b['lines_per_s']:.0f} lines/s ({b['seconds']} s, "
        f"{b['failed']} failed) | |",
        f"| batch / sync | {b['ratio_to_sync']:.2f} | >= 0.5 |",
        f"| one job, enqueue to result p50 (p90) | {one['p50_ms']} ms ({one['p90_ms']} ms); "
        f"stored {one['stored_p50_ms']} ms (queued {one['queued_p50_ms']} ms) | <= 50 ms |",
        f"| {big['file_mb']} MB batch, JobRunner RSS start / peak / end | {rss['start_mib']} / "
        f"{rss['peak_mib']} / {rss['end_mib']} MiB ({big['lines_per_s']:.0f} lines/s) | flat |",
    ]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--file-mb", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--json", type=Path, default=Path("bench-jobs.json"))
    args = parser.parse_args()
    report = run(args)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\n{report['machine']}\n")
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
