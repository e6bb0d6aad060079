"""Tokens/s and time to first token of a GGUF model: llama-cpp-python directly, and through NOA.

Same file, prompt and settings both ways (NOA's defaults: n_ctx 4096, one thread per core,
greedy decoding), streamed, one request at a time.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

PROMPT = [
    {"role": "system", "content": "You are a helpful AI assistant."},
    {"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."},
]
MAX_TOKENS = 128


def summarize(samples: list[tuple[float, int, float]]) -> dict[str, float]:
    """(ttft_s, tokens, decode_s) per run -> medians."""
    return {
        "ttft_ms": statistics.median(s[0] for s in samples) * 1000,
        "tokens": statistics.median(s[1] for s in samples),
        "tokens_per_s": statistics.median((s[1] - 1) / s[2] for s in samples if s[2] > 0),
    }


DIRECT = r"""
import json, os, sys, time, llama_cpp
from noa.providers.llamacpp_models import bundled_model_path
messages, max_tokens, runs = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
llm = llama_cpp.Llama(str(bundled_model_path()), n_ctx=4096, n_threads=os.cpu_count(),
                      n_threads_batch=os.cpu_count(), n_batch=512, verbose=False)
out = []
for _ in range(runs + 1):
    start = time.perf_counter(); first = None; last = None; n = 0
    for chunk in llm.create_chat_completion(messages, max_tokens=max_tokens, temperature=0,
                                            seed=1, stream=True):
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            now = time.perf_counter(); first = first or now; last = now; n += 1
    out.append([first - start, n, last - first])
print(json.dumps(out[1:]))
"""


def direct(runs: int) -> dict[str, float]:
    """llama-cpp-python in a process of its own (nothing else loaded), first run discarded."""
    out = subprocess.run(
        [sys.executable, "-c", DIRECT, json.dumps(PROMPT), str(MAX_TOKENS), str(runs)],
        capture_output=True, text=True, check=True,
    )
    return summarize([tuple(s) for s in json.loads(out.stdout.strip().splitlines()[-1])])


def through_noa(url: str, key: str, model: str, runs: int) -> dict[str, float]:
    body: dict[str, Any] = {"model": model, "messages": PROMPT, "max_tokens": MAX_TOKENS,
                            "temperature": 0, "seed": 1, "stream": True}
    headers = {"authorization": f"Bearer {key}"}
    samples = []
    with httpx.Client(timeout=120) as client:
        for i in range(runs + 1):
            start = time.perf_counter()
            first = last = None
            n = 0
            with client.stream("POST", f"{url}/v1/chat/completions", json=body,
                               headers=headers) as response:
                for line in response.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        now = time.perf_counter()
                        first = first or now
                        last = now
                        n += 1
            if i and first is not None and last is not None:  # the first run warms the model
                samples.append((first - start, n, last - first))
    return summarize(samples)


if __name__ == "__main__":  # pragma: no cover
    print(direct(int(os.environ.get("RUNS", "3"))))
