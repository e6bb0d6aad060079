"""Active provider health: periodic probes that cost no tokens, and their latest results.

The HealthActor deployment runs one ``HealthMonitor`` for the whole app, so every Gateway
replica sees the same picture. Later work adds passive signals and shared breaker state.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

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
