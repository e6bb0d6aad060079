"""Plain data shared by the llama.cpp provider, its model store and its worker process."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelRef:
    """Which model a request uses: the worker loads ``path`` under ``key`` on first use."""

    key: str
    path: str
    embedding: bool


@dataclass(frozen=True)
class LlamaSettings:
    """How a GGUF file is loaded (llama_cpp.Llama keyword arguments)."""

    n_ctx: int = 4096
    n_threads: int | None = None
    n_batch: int = 512
    n_gpu_layers: int = 0
    chat_format: str | None = None
