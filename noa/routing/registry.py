"""The model registry: which names clients may send and where each one can be served.

A name resolves to a ``Target`` (the candidates that may answer, and the strategy that orders
them) in this order: a configured model id, a configured alias, a group id (``auto`` is the
implicit group of every configured model), then ``<provider>/<upstream name>`` for any enabled
provider (``openai/gpt-4o``, ``local/my-gguf``). Entries whose provider is not enabled (no API
key) drop out of a chain; a model with none left cannot be served.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from noa.config import (
    DEFAULT_CAPABILITIES,
    GroupConfig,
    ModelConfig,
    RoutingConfig,
)
from noa.errors import InvalidRequestError, ModelNotFoundError
from noa.routing.plan import Candidate, Plan, Target
from noa.wire import responses
from noa.wire.operations import Operation

AUTO = "auto"
Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    name: str
    kind: str
    enabled: bool
    why_disabled: str = ""


class ModelRegistry:
    """Resolves names to plans and describes models for ``/v1/models``."""

    def __init__(
        self,
        models: Sequence[ModelConfig],
        providers: Iterable[ProviderInfo],
        local_models: Mapping[str, Sequence[str]] | None = None,
        routing: RoutingConfig | None = None,
    ) -> None:
        self._providers = {p.name: p for p in providers}
        self._configs: dict[str, ModelConfig] = {m.id: m for m in models}
        self._names: dict[str, str] = {}
        for m in models:
            for name in (m.id, *m.aliases):
                self._names[name] = m.id
        routing = routing or RoutingConfig()
        self._groups: dict[str, GroupConfig] = {g.id: g for g in routing.groups}
        if AUTO not in self._groups and AUTO not in self._names and models:
            every = [m.id for m in models]
            auto = GroupConfig(id=AUTO, models=every, strategy=routing.auto_strategy)
            self._auto: GroupConfig | None = auto
        else:
            self._auto = None
        self._local = {k: list(v) for k, v in (local_models or {}).items()}
        self._plans: dict[tuple[str, str, bool], Target] = {}

    # -- resolving -------------------------------------------------------------------------------

    def capabilities(self, model: ModelConfig) -> frozenset[str]:
        if model.capabilities:
            return frozenset(model.capabilities)
        return DEFAULT_CAPABILITIES[self._providers[model.entries()[0].provider].kind]

    def _enabled(self, model: ModelConfig) -> list[Candidate]:
        return [
            Candidate(model.id, e.provider, e.upstream, e.price or model.price)
            for e in model.entries()
            if self._providers[e.provider].enabled
        ]

    def _serves(self, provider: str, capability: str) -> bool:
        return capability in DEFAULT_CAPABILITIES[self._providers[provider].kind]

    def _model_plan(self, name: str, model: ModelConfig, capability: str, stream: bool) -> Target:
        enabled = self._enabled(model)
        if not enabled:
            why = "; ".join(
                f"provider '{p.name}' is not enabled ({p.why_disabled})"
                for p in (self._providers[e.provider] for e in model.entries())
            )
            raise ModelNotFoundError(f"The model `{name}` cannot be served: {why}", param="model")
        caps = self.capabilities(model)
        if capability not in caps:
            raise InvalidRequestError(
                f"The model `{name}` does not support {capability}", param="model"
            )
        if stream and "streaming" not in caps:
            raise InvalidRequestError(
                f"The model `{name}` does not support streaming", param="stream"
            )
        able = tuple(c for c in enabled if self._serves(c.provider, capability))
        if not able:
            raise InvalidRequestError(
                f"No enabled provider of the model `{name}` supports {capability}", param="model"
            )
        return Target(
            name,
            able,
            model.strategy,
            model.id,
            model.cache,
            model.cache_shared,
            model.context_length,
        )

    def _group_plan(self, name: str, group: GroupConfig, capability: str, stream: bool) -> Target:
        candidates: list[Candidate] = []
        contexts: list[int | None] = []
        for model_id in group.models:
            model = self._configs[model_id]
            caps = self.capabilities(model)
            if capability not in caps or (stream and "streaming" not in caps):
                continue
            able = [c for c in self._enabled(model) if self._serves(c.provider, capability)]
            candidates += able
            contexts += [model.context_length] if able else []
        if not candidates:
            what = f"{capability} with streaming" if stream else capability
            raise InvalidRequestError(
                f"No model of the group `{name}` that can be served supports {what}",
                param="model",
            )
        # any member may answer: the largest context bounds them all (unknown if one is)
        context = None if None in contexts else max(c for c in contexts if c is not None)
        return Target(name, tuple(candidates), group.strategy, context_length=context)

    def _prefix_plan(self, name: str, capability: str, stream: bool) -> Target | None:
        provider, sep, upstream = name.partition("/")
        info = self._providers.get(provider)
        if not sep or not upstream or info is None:
            return None
        if not info.enabled:
            raise ModelNotFoundError(
                f"The model `{name}` cannot be served: provider '{provider}' is not enabled"
                f" ({info.why_disabled})",
                param="model",
            )
        caps = DEFAULT_CAPABILITIES[info.kind]
        if capability not in caps or (stream and "streaming" not in caps):
            raise InvalidRequestError(
                f"The model `{name}` does not support {capability}", param="model"
            )
        return Target(name, (Candidate(name, provider, upstream),))

    def plan(self, operation: Operation, body: Body, stream: bool = False) -> Plan:
        """The request's plan: its model resolved for ``operation``; a 404 or 400 when the name
        cannot serve it."""
        return Plan(operation, body, self.resolve(body["model"], operation, stream), stream)

    def resolve(self, name: str, capability: str, stream: bool = False) -> Target:
        key = (name, capability, stream)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._resolve(name, capability, stream)
            if name in self._names or name in self._groups or name == AUTO:
                self._plans[key] = plan  # configured names only: the cache stays bounded
        return plan

    def _resolve(self, name: str, capability: str, stream: bool) -> Target:
        model_id = self._names.get(name)
        if model_id is not None:
            return self._model_plan(name, self._configs[model_id], capability, stream)
        group = self._groups.get(name) or (self._auto if name == AUTO else None)
        if group is not None:
            return self._group_plan(name, group, capability, stream)
        plan = self._prefix_plan(name, capability, stream)
        if plan is None:
            raise ModelNotFoundError(
                f"The model `{name}` does not exist. GET /v1/models lists the configured models;"
                f" <provider>/<model> names any model of an enabled provider"
                f" ({', '.join(self.enabled_providers()) or 'none enabled'}).",
                param="model",
            )
        return plan

    # -- describing -----------------------------------------------------------------------------

    def enabled_providers(self) -> list[str]:
        return sorted(n for n, p in self._providers.items() if p.enabled)

    def providers(self) -> list[ProviderInfo]:
        return list(self._providers.values())

    def models(self) -> list[ModelConfig]:
        return list(self._configs.values())

    def _card(self, model_id: str) -> dict[str, Any]:
        if model_id in self._configs:
            m = self._configs[model_id]
            entries = self._enabled(m)
            extra: dict[str, Any] = {
                "aliases": list(m.aliases),
                "provider": entries[0].provider,
                "chain": [{"provider": c.provider, "upstream": c.upstream} for c in entries],
                "strategy": m.strategy,
                "capabilities": sorted(self.capabilities(m)),
                "context_length": m.context_length,
                "tags": list(m.tags),
            }
            if m.price is not None:
                extra["pricing"] = {
                    "input_per_million": m.price.input,
                    "output_per_million": m.price.output,
                }
            kind = self._providers[entries[0].provider].kind
            return responses.model_card(m.id, m.owned_by or kind, **extra)
        if model_id in self._groups:
            g = self._groups[model_id]
            return responses.model_card(
                g.id,
                "noa",
                group=list(g.models),
                strategy=g.strategy,
                capabilities=sorted(
                    set().union(*(self.capabilities(self._configs[m]) for m in g.models))
                ),
            )
        provider = model_id.partition("/")[0]
        kind = self._providers[provider].kind
        return responses.model_card(
            model_id,
            kind,
            provider=provider,
            capabilities=sorted(DEFAULT_CAPABILITIES[kind]),
        )

    def list_models(self) -> list[dict[str, Any]]:
        servable = [m for m in self._configs.values() if self._enabled(m)]
        cards = [self._card(m.id) for m in servable]
        cards += [
            self._card(g.id)
            for g in self._groups.values()
            if any(self._enabled(self._configs[m]) for m in g.models)
        ]
        served = {f"{e.provider}/{e.upstream}" for m in servable for e in m.entries()}
        served |= set(self._configs)
        for provider, names in self._local.items():
            if self._providers.get(provider) and self._providers[provider].enabled:
                cards.extend(
                    self._card(f"{provider}/{n}") for n in names if f"{provider}/{n}" not in served
                )
        return cards

    def get_model(self, name: str) -> dict[str, Any]:
        model_id = self._names.get(name)
        if model_id is not None and self._enabled(self._configs[model_id]):
            return self._card(model_id)
        for card in self.list_models():
            if card["id"] == name:
                return card
        raise ModelNotFoundError(f"The model `{name}` does not exist", param="model")
