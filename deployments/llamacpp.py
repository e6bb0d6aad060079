"""LlamaCpp replicas: GGUF models loaded by Serve's multiplexer, generation on one thread."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
from ray import serve

from deployments.adapters import ProviderShell
from noa import assembly
from noa.config import LlamaCppProviderConfig, parse_config
from noa.providers.llamacpp import LlamaCppProvider
from noa.providers.llamacpp_models import WorkerReleasedModel, llama_loader, split_key, store_key


@serve.deployment
class LlamaCpp(ProviderShell):
    """One local provider's models; ``num_gpus`` comes from the config (1 on GPU clusters)."""

    def __init__(self, config: dict[str, Any], name: str) -> None:
        cfg = parse_config(config).providers[name]
        assert isinstance(cfg, LlamaCppProviderConfig)
        gpu_visible = bool(ray.get_gpu_ids())
        self._catalog = assembly.catalog(cfg)
        self._loader = llama_loader(assembly.llama_settings(cfg, gpu_visible))
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="llama")

        # Serve's multiplexer keeps the LRU (at most N models) and routes by model id. N comes
        # from the config, so the loader is decorated here, as a plain function.
        async def load(model_id: str) -> Any:
            return await self._load_model(model_id)

        self._load = serve.multiplexed(max_num_models_per_replica=cfg.max_loaded_models)(load)
        self.provider = LlamaCppProvider(name, self, self._executor)

    async def _load_model(self, key: str) -> Any:
        name, embedding = split_key(key)
        path = self._catalog.resolve(name)
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(self._executor, self._loader, path, embedding)
        return WorkerReleasedModel(model, self._executor)

    async def get(self, name: str, embedding: bool) -> Any:
        """The ModelStore interface the provider core asks for models through."""
        return await self._load(store_key(name, embedding))
