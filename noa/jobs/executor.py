"""What runs a job: its stored request through the same service as a synchronous one.

``JobExecutor(service, principals)`` is the runner's ``execute``: the job's ``endpoint`` names
the operation, its ``body`` is validated exactly as the HTTP API validates it, and the answer
comes from ``NoaService.answer`` as the submitting key (``principals(job.key_id)``): the same
routing, fallback, cache, limits, budget and usage records, so a job is billed to the key that
submitted it. A key revoked or expired since then is a 401 (the job fails, it is not retried).
Each run is traced (``Tracing.job``: a child of the submitting request's span) and carries the
job's id as its correlation id (its log lines and usage records).

``KeyPrincipals`` reads a key and its team from the stores, briefly cached (a batch of ten
thousand lines is one key), on an injected clock.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from noa import context
from noa.access.identity import MASTER, Principal, key_principal
from noa.access.keys import KeyStore, TeamStore
from noa.errors import AuthenticationError, InvalidRequestError, NoaError
from noa.jobs.model import MASTER_KEY_ID, Job
from noa.observability.tracing import Tracing, record_error
from noa.routing.results import PrimedStream, Routed
from noa.wire.operations import Operation, streamed, validated

Body = dict[str, Any]
Clock = Callable[[], float]
Principals = Callable[[str], Awaitable[Principal]]

OPERATIONS: Mapping[str, Operation] = {
    "/v1/chat/completions": Operation.CHAT,
    "/v1/completions": Operation.COMPLETIONS,
    "/v1/embeddings": Operation.EMBEDDINGS,
}


class Answers(Protocol):
    """``NoaService``: the answer to a validated request, as ``principal``."""

    async def answer(
        self,
        operation: Operation,
        body: Body,
        asked: str | None = None,
        principal: Principal | None = None,
    ) -> Routed | PrimedStream: ...


def job_request(endpoint: str, body: Any, param: str = "body") -> tuple[Operation, Body]:
    """The operation and validated request of a job's ``endpoint`` and ``body``: a 400 naming
    the field otherwise (a job answers once, so it cannot stream)."""
    operation = OPERATIONS.get(endpoint)
    if operation is None:
        raise InvalidRequestError(
            f"Invalid value for 'endpoint': expected one of {', '.join(OPERATIONS)}",
            param="endpoint",
            code="invalid_value",
        )
    try:
        request = validated(operation, body)
    except NoaError as e:
        if e.param:
            e.param = f"{param}.{e.param}"
        raise
    if streamed(operation, request):
        raise InvalidRequestError(
            "A job's answer is stored whole: 'stream' must be false or absent",
            param=f"{param}.stream",
            code="invalid_value",
        )
    return operation, request


@dataclass
class JobExecutor:
    service: Answers
    principals: Principals
    tracing: Tracing = field(default_factory=Tracing)

    async def __call__(self, job: Job) -> Body:
        context.correlation_id_var.set(job.id)  # the job's own task: nothing else sees it
        if not self.tracing.enabled:
            return await self._run(job)
        with self.tracing.job(
            f"job {job.endpoint}",
            job.traceparent,
            link=job.parent_id is not None,
            **{
                "noa.job.id": job.id,
                "noa.job.attempt": job.attempts,
                "noa.job.priority": job.priority.label,
                "noa.batch.id": job.parent_id,
                "noa.schedule.id": job.schedule_id,
            },
        ) as span:
            try:
                return await self._run(job)
            except BaseException as e:
                record_error(span, e)
                raise

    async def _run(self, job: Job) -> Body:
        operation, request = job_request(job.endpoint, dict(job.body))
        principal = await self.principals(job.key_id)
        result = await self.service.answer(operation, request, principal=principal)
        if isinstance(result, PrimedStream):  # cannot happen: the request does not stream
            await result.aclose()
            raise InvalidRequestError("A job cannot stream", param="body.stream")
        return result.body


@dataclass
class KeyPrincipals:
    """The principal of a job's key id (``""``: the master key), cached for ``ttl_s``."""

    keys: KeyStore
    teams: TeamStore
    clock: Clock = time.monotonic
    wall: Clock = time.time  # what a key's expiry is compared with
    ttl_s: float = 5.0
    _cache: dict[str, tuple[float, Principal | NoaError]] = field(default_factory=dict)

    async def __call__(self, key_id: str) -> Principal:
        if key_id == MASTER_KEY_ID:
            return MASTER
        now = self.clock()
        cached = self._cache.get(key_id)
        if cached is None or cached[0] <= now:
            if len(self._cache) > 10_000:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            cached = (now + self.ttl_s, await self._load(key_id))
            self._cache[key_id] = cached
        found = cached[1]
        if isinstance(found, NoaError):
            raise found
        return found

    async def _load(self, key_id: str) -> Principal | NoaError:
        key = await self.keys.get(key_id)
        if key is None:
            return AuthenticationError("The API key that submitted this job no longer exists")
        state = key.state(self.wall())
        if state != "active":
            return AuthenticationError(
                f"The API key that submitted this job is {state}", code=f"key_{state}"
            )
        team = await self.teams.get(key.team) if key.team else None
        return key_principal(key, team)
