"""Tests' shorthand over the one operation vocabulary: a request model or body in, its plan
made by the registry, the answer out (what per-operation methods of the cores used to do)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from noa.access.identity import Principal
from noa.routing.registry import ModelRegistry
from noa.routing.results import PrimedStream, Routed
from noa.routing.router import Router
from noa.service import NoaService, Result
from noa.wire.operations import REQUEST_MODELS, Operation
from noa.wire.requests import dump

Body = dict[str, Any]
OPERATIONS = {model: op for op, model in REQUEST_MODELS.items()}


async def ask(
    service: NoaService,
    request: BaseModel,
    cache: str | None = None,
    principal: Principal | None = None,
) -> Result:
    """``service.answer`` for a validated request model (its operation from its type);
    ``cache``: the policy asked in the ``x-noa-cache`` header."""
    return await service.answer(OPERATIONS[type(request)], dump(request), cache, principal)


class PlannedRouter:
    """A router core with the registry that plans its requests: ``chat(body)``,
    ``stream_chat(body)``, ...; everything else is the router's."""

    def __init__(self, router: Router, registry: ModelRegistry) -> None:
        self.router = router
        self.registry = registry

    def __getattr__(self, name: str) -> Any:
        return getattr(self.router, name)

    async def chat(self, body: Body) -> Routed:
        return await self.router.answer(self.registry.plan(Operation.CHAT, body))

    async def stream_chat(self, body: Body) -> PrimedStream:
        return await self.router.open(self.registry.plan(Operation.CHAT, body, True))

    async def completion(self, body: Body) -> Routed:
        return await self.router.answer(self.registry.plan(Operation.COMPLETIONS, body))

    async def embeddings(self, body: Body) -> Routed:
        return await self.router.answer(self.registry.plan(Operation.EMBEDDINGS, body))
