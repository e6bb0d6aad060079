"""Load generation for the benchmark: wrk for throughput and latency, a one-connection probe
for streaming timing (time to first byte, and whether chunks are held back)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wrk_script(path: Path, body: dict[str, Any], key: str) -> Path:
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    )
    return path


def _ms(value: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", value)
    if match is None:
        raise ValueError(f"unexpected wrk duration {value!r}")
    number, unit = match.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url: str, script: Path, connections: int, seconds: float) -> WrkResult:
    """One wrk run (one thread: the load generator must not steal the server's CPU)."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{round(seconds)}s",
            "--timeout",
            "30s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.MULTILINE))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    if rps is None or "50" not in latency:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=_ms(latency["50"]),
        p99_ms=_ms(latency["99"]),
        errors=errors,
        requests=int(total.group(1)) if total else 0,
    )


@dataclass
class StreamTiming:
    ttfb_ms: float  # request sent -> first SSE event
    total_ms: float
    events: int
    max_hold_ms: float  # worst lag of a content chunk behind the upstream's schedule

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _content(event: bytes) -> str:
    try:
        data = json.loads(event[5:])
    except ValueError:
        return ""  # [DONE]
    choices = data.get("choices") or []
    return (choices[0].get("delta") or {}).get("content") or "" if choices else ""


async def _probe(
    url: str, body: dict[str, Any], key: str, interval_ms: float, words: list[str]
) -> StreamTiming:
    """Content chunk i leaves the upstream i * interval_ms after chunk 0; how late does it
    arrive (after chunk 0 arrived)? Content, not event count, tells which chunk an event
    carries, so a gateway that merges or drops non-content events is measured fairly."""
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    marks = [len("".join(words[: i + 1])) for i in range(len(words))]
    arrivals: list[tuple[float, int]] = []  # (time, index of the last content chunk seen)
    events = 0
    text = ""
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        first = None
        async with session.post(url, data=json.dumps(body), headers=headers) as response:
            response.raise_for_status()
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    if not event.startswith(b"data:"):
                        continue
                    now = time.perf_counter()
                    first = first or now
                    events += 1
                    piece = _content(event)
                    if piece:
                        text += piece
                        arrivals.append((now, sum(1 for m in marks if m <= len(text)) - 1))
        end = time.perf_counter()
    if first is None or not arrivals:
        raise RuntimeError(f"no content chunks from {url}")
    t0 = arrivals[0][0] - arrivals[0][1] * interval_ms / 1000
    holds = [(t - t0) * 1000 - i * interval_ms for t, i in arrivals]
    return StreamTiming(
        ttfb_ms=(first - start) * 1000,
        total_ms=(end - start) * 1000,
        events=events,
        max_hold_ms=max(0.0, *holds),
    )


def stream_probe(
    url: str, body: dict[str, Any], key: str, interval_ms: float, words: list[str], runs: int = 5
) -> StreamTiming:
    """The median time to first byte and the worst hold over ``runs`` sequential streams."""
    timings = [asyncio.run(_probe(url, body, key, interval_ms, words)) for _ in range(runs)]
    ttfb = sorted(t.ttfb_ms for t in timings)[len(timings) // 2]
    return StreamTiming(
        ttfb_ms=ttfb,
        total_ms=sorted(t.total_ms for t in timings)[len(timings) // 2],
        events=timings[0].events,
        max_hold_ms=max(t.max_hold_ms for t in timings),
    )
