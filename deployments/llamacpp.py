"""LlamaCpp replicas: GGUF models chosen by Serve's multiplexer, run by a worker process."""

from __future__ import annotations

from typing import Any

import ray
from ray import serve

from deployments.adapters import ProviderShell
from noa.build.providers import catalog as local_catalog
from noa.build.providers import llama_settings
from noa.config import LlamaCppProviderConfig, parse_config
from noa.providers.llamacpp.models import ModelRef, load, store_key
from noa.providers.llamacpp.process import LlamaProcess
from noa.providers.llamacpp.provider import LlamaCppProvider


class _Loaded:
    """What the multiplexer holds per model; its eviction unloads the model in the worker."""

    def __init__(self, ref: ModelRef, worker: LlamaProcess) -> None:
        self.ref = ref
        self._worker = worker
        self._released = False

    def __del__(self) -> None:
        # Serve calls this on eviction; Python may call it again later: once is enough.
        if not self._released:
            self._released = True
            self._worker.unload(self.ref.key)


@serve.deployment
class LlamaCpp(ProviderShell):
    """One local provider's models; ``num_gpus`` comes from the config (1 on GPU clusters)."""

    def __init__(self, config: dict[str, Any], name: str) -> None:
        cfg = parse_config(config).providers[name]
        assert isinstance(cfg, LlamaCppProviderConfig)
        catalog = local_catalog(cfg)
        settings = llama_settings(cfg, gpu_visible=bool(ray.get_gpu_ids()))
        worker = LlamaProcess(settings, name=f"llama-{name}")

        # Serve's multiplexer keeps the LRU (at most N models) and routes requests to replicas
        # that hold their model. N comes from the config, so the loader is decorated here.
        async def load_model(key: str) -> _Loaded:
            return _Loaded(await load(catalog, worker, key), worker)

        self._load = serve.multiplexed(max_num_models_per_replica=cfg.max_loaded_models)(load_model)
        self.provider = LlamaCppProvider(name, self, worker)

    async def get(self, name: str, embedding: bool) -> ModelRef:
        """The ModelStore interface the provider core asks for models through."""
        loaded: _Loaded = await self._load(store_key(name, embedding))
        return loaded.ref
