"""Tokens/s and time to first token of a GGUF model: llama-cpp-python directly, and through NOA.

Same file, prompt and settings both ways (NOA's defaults: n_ctx 4096, one thread per core,
greedy decoding), streamed, one request at a time. The two are measured in turns, direct then
through NOA, while NOA's cluster is up: both see the same machine, its other tenants included.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse

PROMPT = [
    {"role": "system", "content": "You are a helpful AI assistant."},
    {"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."},
]
MAX_TOKENS = 128

Sample = tuple[float, int, float]  # (time to first token s, tokens, decode time s)

DIRECT = r"""
import json, os, sys, time, llama_cpp
from noa.providers.llamacpp.models import bundled_model_path
messages, max_tokens = json.loads(sys.argv[1]), int(sys.argv[2])
llm = llama_cpp.Llama(str(bundled_model_path()), n_ctx=4096, n_threads=os.cpu_count(),
                      n_threads_batch=os.cpu_count(), n_batch=512, verbose=False)
for _ in sys.stdin:
    start = time.perf_counter(); first = None; last = None; n = 0
    for chunk in llm.create_chat_completion(messages, max_tokens=max_tokens, temperature=0,
                                            seed=1, stream=True):
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            now = time.perf_counter(); first = first or now; last = now; n += 1
    print(json.dumps([first - start, n, last - first]), flush=True)
"""


def summarize(samples: list[Sample]) -> dict[str, float]:
    return {
        "ttft_ms": statistics.median(s[0] for s in samples) * 1000,
        "tokens": statistics.median(s[1] for s in samples),
        "tokens_per_s": statistics.median((s[1] - 1) / s[2] for s in samples if s[2] > 0),
        "runs": len(samples),
    }


class Direct:
    """llama-cpp-python in a process of its own, one generation per ``run()``."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DIRECT, json.dumps(PROMPT), str(MAX_TOKENS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def run(self) -> Sample:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        ttft, n, decode = json.loads(self.proc.stdout.readline())
        return float(ttft), int(n), float(decode)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def through_noa(url: str, key: str, model: str) -> Sample:
    """One streamed request over a raw socket: a client adds next to nothing to the timing."""
    parsed = urllib.parse.urlparse(url)
    body = json.dumps(
        {
            "model": model,
            "messages": PROMPT,
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            "seed": 1,
            "stream": True,
        }
    ).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        "x-noa-cache: bypass\r\n"  # the model's speed, not the response cache's
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    first = last = None
    n = 0
    buffer = b""
    with socket.create_connection((parsed.hostname, parsed.port), timeout=300) as sock:
        start = time.perf_counter()
        sock.sendall(request)
        while True:
            data = sock.recv(65536)
            if not data:
                break
            now = time.perf_counter()
            buffer += data
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                at = event.find(b"data: {")
                if at < 0:
                    continue
                chunk = json.loads(event[at + 6 :])
                if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                    first = first or now
                    last = now
                    n += 1
    if first is None or last is None:
        raise RuntimeError(f"no tokens came back: {buffer[:300]!r}")
    return first - start, n, last - first


def compare(url: str, key: str, model: str, runs: int) -> dict[str, dict[str, float]]:
    """Direct and through NOA, in turns; the first round of each warms up and is dropped."""
    direct = Direct()
    direct_samples: list[Sample] = []
    noa_samples: list[Sample] = []
    try:
        for i in range(runs + 1):
            d, n = direct.run(), through_noa(url, key, model)
            if i:
                direct_samples.append(d)
                noa_samples.append(n)
    finally:
        direct.close()
    return {"direct": summarize(direct_samples), "noa": summarize(noa_samples)}


if __name__ == "__main__":  # pragma: no cover
    print(compare(sys.argv[1], sys.argv[2], sys.argv[3], int(os.environ.get("RUNS", "5"))))
