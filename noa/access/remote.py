"""Limits decided in one place for every Gateway replica when there are several and no Redis:
the LimiterActor's core (``LimiterEndpoint``) and each replica's ``Limiter`` over its handle
(``RemoteLimiter``). Each decision is one atomic step there, so limits are exact. Calls made
while one is on its way go out together (``admit_many`` / ``adjust_many``: one hop for many
requests, each decided in turn)."""

from __future__ import annotations

from typing import Any

from noa.access.coalescing import Coalescer
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

    async def admit_many(
        self, calls: list[tuple[list[Take], list[Reserve], str | None]]
    ) -> list[dict[str, Any]]:
        """Each call's decision, taken in order (as many ``admit``\\ s would be)."""
        return [await self.admit(takes, reserves, who) for takes, reserves, who in calls]

    async def adjust_many(
        self, calls: list[tuple[dict[str, tuple[float, float]], dict[str, float]]]
    ) -> list[None]:
        for tokens, dollars in calls:
            await self._limiter.adjust(tokens, dollars)
        return [None] * len(calls)


class RemoteLimiter:
    """A ``Limiter`` over a handle to the LimiterActor (or to a Gateway, whose methods carry
    ``prefix``: ``limiter_admit_many``...), concurrent calls coalesced into one hop."""

    def __init__(self, handle: Any, prefix: str = "") -> None:
        self._handle = handle
        admit_many = getattr(handle, f"{prefix}admit_many")
        adjust_many = getattr(handle, f"{prefix}adjust_many")
        self._revoke = getattr(handle, f"{prefix}revoke")

        async def admits(calls: list[Any]) -> list[dict[str, Any]]:
            answers: list[dict[str, Any]] = await admit_many.remote(calls)
            return answers

        async def adjusts(calls: list[Any]) -> list[None]:
            answers: list[None] = await adjust_many.remote(calls)
            return answers

        self._admit: Coalescer[Any, dict[str, Any]] = Coalescer(admits)
        self._adjust: Coalescer[Any, None] = Coalescer(adjusts)

    async def admit(
        self, takes: list[Take], reserves: list[Reserve], principal: str | None = None
    ) -> Decision:
        return Decision.from_wire(await self._admit((takes, reserves, principal)))

    async def adjust(
        self, tokens: dict[str, tuple[float, float]], dollars: dict[str, float]
    ) -> None:
        await self._adjust((tokens, dollars))

    async def revoke(self, principal: str) -> None:
        await self._revoke.remote(principal)
