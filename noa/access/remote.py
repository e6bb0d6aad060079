"""Limits decided in one place for every Gateway replica when there are several and no Redis:
the LimiterActor's core (``LimiterEndpoint``) and each replica's ``Limiter`` over its handle
(``RemoteLimiter``). Each decision is one atomic step there, so limits are exact. Calls made
while one is on its way go out together (``apply_many``: one hop for many requests, each
decided in turn)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from noa.access.coalescing import Coalescer
from noa.access.limiter import Limiter, LocalLimiter
from noa.access.limits import Decision, Reserve, Take

logger = logging.getLogger("noa.access.remote")


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

    async def apply_many(self, ops: list[tuple[Any, ...]]) -> list[dict[str, Any] | None]:
        """Each op in order, as the single calls would be: ``("admit", takes, reserves,
        principal)`` answers its decision, ``("adjust", tokens, dollars)`` None."""
        answers: list[dict[str, Any] | None] = []
        for op in ops:
            if op[0] == "admit":
                answers.append(await self.admit(op[1], op[2], op[3]))
            elif op[0] == "adjust":
                await self._limiter.adjust(op[1], op[2])
                answers.append(None)
            else:
                raise ValueError(f"unknown limiter op {op[0]!r}")
        return answers


class RemoteLimiter:
    """A ``Limiter`` over a handle to the LimiterActor (or to a Gateway, whose methods carry
    ``prefix``: ``limiter_apply_many``...). Admits and adjusts share one ordered stream of
    coalesced calls: an adjust is not waited for (it leaves with the next batch), yet any
    admit made after it in this process is decided after it, as if it had been awaited."""

    def __init__(self, handle: Any, prefix: str = "") -> None:
        self._handle = handle
        apply_many = getattr(handle, f"{prefix}apply_many")
        self._revoke = getattr(handle, f"{prefix}revoke")

        async def send(ops: list[tuple[Any, ...]]) -> list[dict[str, Any] | None]:
            answers: list[dict[str, Any] | None] = await apply_many.remote(ops)
            return answers

        self._ops: Coalescer[tuple[Any, ...], dict[str, Any] | None] = Coalescer(send)

    async def admit(
        self, takes: list[Take], reserves: list[Reserve], principal: str | None = None
    ) -> Decision:
        wire = await self._ops(("admit", takes, reserves, principal))
        assert wire is not None
        return Decision.from_wire(wire)

    async def adjust(
        self, tokens: dict[str, tuple[float, float]], dollars: dict[str, float]
    ) -> None:
        self._ops.submit(("adjust", tokens, dollars)).add_done_callback(_logged)

    async def revoke(self, principal: str) -> None:
        await self._revoke.remote(principal)


def _logged(done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and (exc := done.exception()) is not None:
        logger.warning("a limiter adjustment was lost: %r", exc)
