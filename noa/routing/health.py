"""Active provider health: periodic probes that cost no tokens, and their latest results.

The HealthActor deployment runs one ``HealthMonitor`` for the whole app, so every Gateway
replica sees the same picture; ``readiness`` turns that picture (with the shared breakers and the
replicas' traffic) into ``/health/ready``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from noa.routing.registry import ModelRegistry

Probe = Callable[[], Awaitable[None]]
Clock = Callable[[], float]


@dataclass
class ProviderHealth:
    status: str = "unknown"  # unknown | ok | down
    checked_at: float | None = None
    latency_ms: float | None = None
    error: str | None = None
    consecutive_failures: int = 0


class HealthMonitor:
    """Runs each provider's probe and keeps the latest result per provider."""

    def __init__(self, probes: Mapping[str, Probe], clock: Clock = time.time) -> None:
        self._probes = dict(probes)
        self._clock = clock
        self._state = {name: ProviderHealth() for name in self._probes}

    async def check(self, name: str) -> ProviderHealth:
        state = self._state[name]
        started = self._clock()
        try:
            await self._probes[name]()
        except Exception as e:
            state.status = "down"
            state.error = str(e) or type(e).__name__
            state.consecutive_failures += 1
        else:
            state.status = "ok"
            state.error = None
            state.consecutive_failures = 0
        finished = self._clock()
        state.checked_at = finished
        state.latency_ms = round((finished - started) * 1000, 3)
        return state

    async def check_all(self) -> dict[str, dict[str, Any]]:
        for name in self._probes:
            await self.check(name)
        return self.snapshot()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: asdict(state) for name, state in self._state.items()}


def readiness(registry: ModelRegistry, shared: Mapping[str, Any]) -> tuple[bool, dict[str, Any]]:
    """Whether every configured model has a provider that can answer, and why not.

    ``shared`` is the HealthActor's snapshot: active probes per provider, the shared breakers
    per ``provider/upstream``, and the traffic every replica reported.
    """
    probes: Mapping[str, Any] = shared.get("providers", {})
    breakers: Mapping[str, Any] = shared.get("breakers", {})
    traffic: Mapping[str, Any] = shared.get("traffic", {})
    providers: dict[str, Any] = {}
    for info in registry.providers():
        probe = probes.get(info.name, {})
        state = "disabled" if not info.enabled else probe.get("status", "unknown")
        providers[info.name] = {
            "status": state,
            "kind": info.kind,
            "checked_at": probe.get("checked_at"),
            "probe_latency_ms": probe.get("latency_ms"),
            "error": probe.get("error") or (info.why_disabled or None),
            "models": {
                key.partition("/")[2]: {
                    "breaker": breakers.get(key, {}).get("state", "closed"),
                    **traffic.get(key, {}),
                }
                for key in sorted(set(breakers) | set(traffic))
                if key.partition("/")[0] == info.name
            },
        }
    models: dict[str, str] = {}
    for model in registry.models():
        usable = [
            e
            for e in model.entries()
            if providers[e.provider]["status"] not in ("down", "disabled")
            and breakers.get(f"{e.provider}/{e.upstream}", {}).get("state") != "open"
        ]
        models[model.id] = "available" if usable else "unavailable"
    ready = all(state == "available" for state in models.values())
    return ready, {
        "status": "ready" if ready else "not_ready",
        "models": models,
        "providers": providers,
    }
