#!/usr/bin/env python3
"""The queue bridges' benchmark, one run: messages/s through each bridge (RabbitMQ, Kafka,
SQS, Redis Streams) next to NOA's synchronous req/s, and a message's end-to-end latency.

    ./scripts/bench/bridges.sh [--messages 6000] [--sqs-messages 300] [--latency-runs 100]
                               [--seconds 8] [--kinds ...] [--json F]

Brokers of the run's own are started on loopback (scripts/services.py: RabbitMQ, tansu for
Kafka, moto for SQS, Redis); NOA is deployed with ``serve deploy`` (serve_config.yaml, master
key) in front of the fast fake upstream, with one bridge per broker (``queues:``) and one
JobRunner (``jobs.concurrency: 256``), its database a PostgreSQL of the run's own (``--database
sqlite``: the embedded default). Then:
1. synchronous chat at 32 connections (wrk, one thread): req/s;
2. per bridge, ``--messages`` chat requests put on its source as fast as a producer can (64
   sends in flight; SQS in batches of ten), the results read from its reply destination:
   messages/s from the first send to the last result, and its ratio to (1);
3. per broker, the same producer and reader with no NOA between them (a queue of their own):
   the broker's own messages/s and one message's round trip, what a bridge stands on;
4. per bridge, ``--latency-runs`` messages one at a time on the idle system: from the send
   to the result read back, p50 and p99.
The producer and reader are the test suite's broker probes (tests/support/broker_*.py).
Prints a markdown table and writes JSON. Not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "support"))

import orjson
from bench import NOA_ARGS, api_key, machine
from brokers import KINDS, probe
from loadgen import wrk, wrk_script
from systems import FakeUpstream, Noa

ROOT = Path(__file__).resolve().parents[2]
ENV = {k: f"NOA_BENCH_{k.upper()}_URL" for k in KINDS}
MESSAGES = [{"role": "user", "content": "Say hello."}]


def services() -> Any:
    spec = importlib.util.spec_from_file_location("noa_services", ROOT / "scripts/services.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start_brokers(state: Path, database: str) -> dict[str, str]:
    """The four brokers (and a PostgreSQL for NOA's database: ``NOA_DATABASE_URL``) of the
    run's own."""
    s = services()
    s.install()
    started = s.Started(state)
    starts = {"rabbitmq": s.start_rabbitmq, "kafka": s.start_kafka, "sqs": s.start_sqs,
              "redis": s.start_redis}  # fmt: skip
    urls = {kind: start(started) for kind, start in starts.items()}
    if database == "postgres":
        os.environ["NOA_DATABASE_URL"] = s.start_postgres(started)
    return urls


def names(kind: str) -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:6]  # SQS: standard queues (FIFO's order costs throughput)
    return (f"bench-in-{tag}", f"bench-out-{tag}", f"bench-dead-{tag}")


def bridges(streams: dict[str, tuple[str, str, str]]) -> list[dict[str, Any]]:
    out = []
    for kind, (source, reply_to, dead_letter) in streams.items():
        entry: dict[str, Any] = {
            "name": f"bench-{kind}", "kind": kind, "url_env": ENV[kind], "source": source,
            "reply_to": reply_to, "dead_letter": dead_letter, "concurrency": 256,
            "default_model": "bench",
        }  # fmt: skip
        if kind == "sqs":
            entry["options"] = {"region": "us-east-1"}
        out.append(entry)
    return out


def request(message_id: str) -> bytes:
    return orjson.dumps({"id": message_id, "body": {"messages": MESSAGES}})


def producer(broker: Any, source: str, n: int, tag: str) -> Any:
    """Sends ``n`` requests as fast as a producer can: 64 sends in flight (SQS: batches of ten,
    as a producer of many messages sends them); the time they took."""
    gate = asyncio.Semaphore(64)
    many = getattr(broker, "send_many", None)

    async def send(i: int) -> None:
        async with gate:
            if many is not None:
                await many(source, [request(f"{tag}-{j}") for j in range(i, min(i + 10, n))])
            else:
                await broker.send(source, request(f"{tag}-{i}"))

    async def all_sent() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(send(i) for i in range(0, n, 10 if many else 1)))
        return time.perf_counter() - started

    return asyncio.ensure_future(all_sent())


async def drained(broker: Any, destination: str, n: int) -> set[str]:
    """The ids of ``n`` messages read from ``destination`` (RabbitMQ: pushed to a consumer, as
    a reader of many takes them, rather than one ``basic.get`` per message)."""
    read = getattr(broker, "consume", None) or broker.read
    seen: set[str] = set()
    deadline = time.perf_counter() + 600
    while len(seen) < n and time.perf_counter() < deadline:
        for raw in await read(destination, n - len(seen), timeout_s=1.0):
            seen.add(orjson.loads(raw)["id"])
    return seen


async def throughput(kind: str, where: tuple[str, str, str], n: int) -> dict[str, Any]:
    broker = probe(kind)
    source, reply_to, _ = where
    try:
        started = time.perf_counter()
        sending = producer(broker, source, n, "t")
        seen = await drained(broker, reply_to, n)
        took = time.perf_counter() - started
        sent_s = await sending
    finally:
        await broker.close()
    return {"messages": n, "answered": len(seen), "seconds": round(took, 2),
            "messages_per_s": round(len(seen) / took, 1), "send_s": round(sent_s, 2)}  # fmt: skip


async def answered(broker: Any, destination: str, message_id: str, kind: str) -> None:
    """Once the message ``message_id`` is read from ``destination`` (each probe's read returns
    as soon as one is there; what an earlier run left there is passed over)."""
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        for raw in await broker.read(destination, 1, timeout_s=5):
            if orjson.loads(raw)["id"] == message_id:
                return
    raise RuntimeError(f"{kind}: {message_id} never came back")


async def broker_alone(kind: str, n: int, runs: int = 30) -> dict[str, float]:
    """The broker's own messages/s and one message's round trip with the same producer and
    reader and no NOA between them (a queue of their own): what a bridge stands on."""
    broker = probe(kind)
    scratch = f"bench-alone-{uuid.uuid4().hex[:6]}"
    try:
        await broker.create(scratch)
        started = time.perf_counter()
        sending = producer(broker, scratch, n, "b")
        seen = await drained(broker, scratch, n)
        await sending
        per_s = len(seen) / (time.perf_counter() - started)
        took = []
        for i in range(runs):
            await asyncio.sleep(0.05)
            began = time.perf_counter()
            await broker.send(scratch, request(f"r-{i}"))
            await answered(broker, scratch, f"r-{i}", kind)
            took.append((time.perf_counter() - began) * 1000)
        return {"per_s": round(per_s, 1), "round_trip_p50_ms": round(statistics.median(took), 1)}
    finally:
        await broker.close()


async def latency(kind: str, where: tuple[str, str, str], runs: int) -> dict[str, Any]:
    broker = probe(kind)
    source, reply_to, _ = where
    took: list[float] = []
    try:
        for i in range(runs + 3):  # the first three warm up
            await asyncio.sleep(0.2)  # idle between messages
            started = time.perf_counter()
            await broker.send(source, request(f"l-{i}"))
            await answered(broker, reply_to, f"l-{i}", kind)
            took.append((time.perf_counter() - started) * 1000)
    finally:
        await broker.close()
    took = took[3:]
    p99 = statistics.quantiles(took, n=100)[-1]
    return {"p50_ms": round(statistics.median(took), 1), "p99_ms": round(p99, 1), "runs": len(took)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="noa-bench-bridges-"))
    tmp.chmod(0o755)  # a PostgreSQL run as `postgres` keeps its data below
    os.environ["NOA_HOME"] = str(tmp / "noa-home")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    report: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    state = tmp / "brokers"
    state.mkdir()
    upstream = FakeUpstream(tmp, "upstream")
    noa = None
    try:
        print("bench-bridges: starting the brokers", flush=True)
        urls = start_brokers(state, args.database)
        report["database"] = args.database
        from brokers import ENV as TEST_ENV

        for kind, url in urls.items():
            os.environ[ENV[kind]] = url
            os.environ[TEST_ENV[kind]] = url  # the probes read these
        streams = {kind: names(kind) for kind in args.kinds}

        async def create() -> None:
            for kind, where in streams.items():
                broker = probe(kind)
                await broker.create(*where)
                await broker.close()

        asyncio.run(create())
        job_args = {**NOA_ARGS, "jobs": {"concurrency": 256, "poll_s": 0.5},
                    "queues": bridges(streams)}  # fmt: skip
        noa = Noa(upstream.base_url, job_args)
        print("bench-bridges: starting NOA", flush=True)
        url = noa.start()
        key = api_key(url)
        print("bench-bridges: synchronous chat at c=32", flush=True)
        script = wrk_script(tmp / "chat.lua", {"model": "bench", "messages": MESSAGES}, key)
        wrk(f"{url}/v1/chat/completions", script, 4, 1)
        sync = wrk(f"{url}/v1/chat/completions", script, 32, args.seconds)
        report["sync_c32"] = sync.as_dict()
        report["bridges"] = {}
        for kind in args.kinds:
            n = args.sqs_messages if kind == "sqs" else args.messages
            print(f"bench-bridges: {kind}: {n} messages", flush=True)
            result = asyncio.run(throughput(kind, streams[kind], n))
            result["ratio_to_sync"] = round(result["messages_per_s"] / sync.rps, 2)
            print(f"bench-bridges: {kind}: the broker alone", flush=True)
            result["broker_alone"] = asyncio.run(broker_alone(kind, n))
            print(f"bench-bridges: {kind}: latency, {args.latency_runs} one at a time", flush=True)
            result["latency"] = asyncio.run(latency(kind, streams[kind], args.latency_runs))
            report["bridges"][kind] = result
    finally:
        if noa is not None:
            noa.stop()
        upstream.stop()
        services().stop(state)
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def table(r: dict[str, Any]) -> str:
    rows = [
        "| measure | messages/s (ratio to sync) | latency p50 / p99 | the broker alone: "
        "messages/s, round trip p50 | target |",
        "|---|---|---|---|---|",
        f"| sync chat c=32 (same run) | {r['sync_c32']['rps']:.0f} req/s | | | |",
    ]
    for kind, b in r["bridges"].items():
        lat = b["latency"]
        rows.append(
            f"| {kind} bridge, {b['answered']}/{b['messages']} answered | "
            f"{b['messages_per_s']:.0f} ({b['ratio_to_sync']:.2f}) | "
            f"{lat['p50_ms']} / {lat['p99_ms']} ms | "
            f"{b['broker_alone']['per_s']:.0f}/s, {b['broker_alone']['round_trip_p50_ms']} ms | "
            ">= 0.5 |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=6000)
    # moto's SQS slows with every message queued (its receive is ~0.5 s with 1,000 there)
    parser.add_argument("--sqs-messages", type=int, default=300)
    parser.add_argument("--latency-runs", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--json", type=Path, default=Path("bench-bridges.json"))
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    # the bridges, the JobRunner and the Gateways all write jobs: PostgreSQL, as deployed
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    args = parser.parse_args()
    report = run(args)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\n{report['machine']}, NOA's database: {report['database']}\n")
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
