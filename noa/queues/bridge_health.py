"""How one queue bridge replica is doing: what its worker keeps up to date, and what it
reports (``public()``) to the app's health center for ``/health/ready``, ``/status`` and the
dashboard (``noa.routing.health_center.bridge_states`` sums the replicas)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class BridgeHealth:
    """How one bridge replica is doing."""

    name: str
    kind: str
    connected: bool = False
    since: float | None = None  # connected or down since
    last_error: str | None = None
    reconnects: int = 0
    in_flight: int = 0
    waiting_for_room: int = 0  # held messages waiting for their model's queue to shrink
    lag: int | None = None
    taken: int = 0
    published: int = 0

    def public(self) -> dict[str, Any]:
        state = "up" if self.connected else "down"
        if self.connected and self.waiting_for_room:
            state = "paused"  # back-pressure: the model's job queue is over its depth
        return {
            "status": state,
            "kind": self.kind,
            "since": self.since,
            "last_error": self.last_error,
            "reconnects": self.reconnects,
            "in_flight": self.in_flight,
            "waiting_for_room": self.waiting_for_room,
            "lag": self.lag,
            "taken": self.taken,
            "published": self.published,
        }
