"""Limits decided in one place for every Gateway replica when there are several and no Redis:
the LimiterActor's core (``LimiterEndpoint``) and each replica's ``Limiter`` over its handle
(``RemoteLimiter``). Each decision is one atomic step there, so limits are exact."""

from __future__ import annotations

from typing import Any

from noa.access.limiter import Limiter, LocalLimiter
from noa.access.limits import Decision, Reserve, Take


class LimiterEndpoint:
    """A limiter (a ``LocalLimiter`` by default; a Gateway's own, for its JobRunner) whose
    decisions leave as plain data (they cross a handle)."""

    def __init__(self, limiter: Limiter | None = None) -> None:
        self._limiter: Limiter = limiter or LocalLimiter()

    async def admit(
        self, takes: list[Take], reserves: list[Reserve], principal: str | None
    ) -> dict[str, Any]:
        return (await self._limiter.admit(takes, reserves, principal)).to_wire()

    async def adjust(
        self, tokens: dict[str, tuple[float, float]], dollars: dict[str, float]
    ) -> None:
        await self._limiter.adjust(tokens, dollars)

    async def revoke(self, principal: str) -> None:
        await self._limiter.revoke(principal)


class RemoteLimiter:
    """A ``Limiter`` over a handle to the LimiterActor (or to a Gateway, whose methods carry
    ``prefix``: ``limiter_admit``...)."""

    def __init__(self, handle: Any, prefix: str = "") -> None:
        self._handle = handle
        self._admit = getattr(handle, f"{prefix}admit")
        self._adjust = getattr(handle, f"{prefix}adjust")
        self._revoke = getattr(handle, f"{prefix}revoke")

    async def admit(
        self, takes: list[Take], reserves: list[Reserve], principal: str | None = None
    ) -> Decision:
        wire = await self._admit.remote(takes, reserves, principal)
        return Decision.from_wire(wire)

    async def adjust(
        self, tokens: dict[str, tuple[float, float]], dollars: dict[str, float]
    ) -> None:
        await self._adjust.remote(tokens, dollars)

    async def revoke(self, principal: str) -> None:
        await self._revoke.remote(principal)
