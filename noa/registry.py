"""The model registry: which names clients may send and where each one is served.

A name resolves to a ``Route`` in this order: a configured model id, a configured alias, then
``<provider>/<upstream name>`` for any enabled provider (``openai/gpt-4o``, ``local/my-gguf``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from noa.config import DEFAULT_CAPABILITIES, ModelConfig
from noa.errors import InvalidRequestError, ModelNotFoundError
from noa.wire import responses


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes."""

    model_id: str
    provider: str
    upstream: str
    capabilities: frozenset[str]


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    name: str
    kind: str
    enabled: bool
    why_disabled: str = ""


class ModelRegistry:
    """Resolves names to routes and describes models for ``/v1/models``."""

    def __init__(
        self,
        models: Sequence[ModelConfig],
        providers: Iterable[ProviderInfo],
        local_models: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._providers = {p.name: p for p in providers}
        self._routes: dict[str, Route] = {}
        self._configs: dict[str, ModelConfig] = {}
        for m in models:
            kind = self._providers[m.provider].kind
            caps = frozenset(m.capabilities or DEFAULT_CAPABILITIES[kind])
            route = Route(m.id, m.provider, m.upstream, caps)
            for name in (m.id, *m.aliases):
                self._routes[name] = route
            self._configs[m.id] = m
        self._local = {k: list(v) for k, v in (local_models or {}).items()}

    def _prefix_route(self, name: str) -> Route | None:
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
        return Route(name, provider, upstream, DEFAULT_CAPABILITIES[info.kind])

    def resolve(self, name: str, capability: str, stream: bool = False) -> Route:
        route = self._routes.get(name)
        if route is not None:
            info = self._providers[route.provider]
            if not info.enabled:
                raise ModelNotFoundError(
                    f"The model `{name}` cannot be served: provider '{route.provider}' is not"
                    f" enabled ({info.why_disabled})",
                    param="model",
                )
        else:
            route = self._prefix_route(name)
        if route is None:
            raise ModelNotFoundError(
                f"The model `{name}` does not exist. GET /v1/models lists the configured models;"
                f" <provider>/<model> names any model of an enabled provider"
                f" ({', '.join(self.enabled_providers()) or 'none enabled'}).",
                param="model",
            )
        if capability not in route.capabilities:
            raise InvalidRequestError(
                f"The model `{name}` does not support {capability}", param="model"
            )
        if stream and "streaming" not in route.capabilities:
            raise InvalidRequestError(
                f"The model `{name}` does not support streaming", param="stream"
            )
        return route

    def enabled_providers(self) -> list[str]:
        return sorted(n for n, p in self._providers.items() if p.enabled)

    def providers(self) -> list[ProviderInfo]:
        return list(self._providers.values())

    def _card(self, model_id: str) -> dict[str, Any]:
        if model_id in self._configs:
            m = self._configs[model_id]
            return responses.model_card(
                m.id,
                m.owned_by or self._providers[m.provider].kind,
                aliases=list(m.aliases),
                provider=m.provider,
                capabilities=sorted(m.capabilities or DEFAULT_CAPABILITIES[self._kind(m)]),
                context_length=m.context_length,
            )
        provider = model_id.partition("/")[0]
        return responses.model_card(
            model_id,
            self._providers[provider].kind,
            provider=provider,
            capabilities=sorted(DEFAULT_CAPABILITIES[self._providers[provider].kind]),
        )

    def _kind(self, m: ModelConfig) -> str:
        return self._providers[m.provider].kind

    def list_models(self) -> list[dict[str, Any]]:
        cards = [
            self._card(model_id)
            for model_id, m in self._configs.items()
            if self._providers[m.provider].enabled
        ]
        served = {r.provider + "/" + r.upstream for r in self._routes.values()} | set(self._configs)
        for provider, names in self._local.items():
            if self._providers.get(provider) and self._providers[provider].enabled:
                cards.extend(
                    self._card(f"{provider}/{n}") for n in names if f"{provider}/{n}" not in served
                )
        return cards

    def get_model(self, name: str) -> dict[str, Any]:
        route = self._routes.get(name)
        if route is not None and self._providers[route.provider].enabled:
            return self._card(route.model_id)
        for card in self.list_models():
            if card["id"] == name:
                return card
        raise ModelNotFoundError(f"The model `{name}` does not exist", param="model")
