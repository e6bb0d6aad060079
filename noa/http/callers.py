"""Who calls a route, as the job, file and batch APIs need it: whose jobs they are and whether
the caller sees everyone's."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from noa.access.identity import Principal
from noa.errors import InvalidRequestError, PermissionDeniedError
from noa.jobs.model import MASTER_KEY_ID
from noa.wire.fields import storable


@dataclass(frozen=True)
class Caller:
    """``key_id``: what the caller's jobs are billed to (``""``: the master key, or anyone
    when auth is off); ``scope``: whose jobs it may see (None: everyone's)."""

    key_id: str
    team: str | None
    admin: bool

    @property
    def scope(self) -> str | None:
        return None if self.admin else self.key_id


def principal(request: Request) -> Principal | None:
    found: Principal | None = request.scope.get("state", {}).get("principal")
    return found


def caller(request: Request) -> Caller:
    """The caller of a job route; a JWT's subject cannot own jobs (a job runs later, as a key
    the store can read again), so it is a 403."""
    return caller_of(principal(request))


def caller_of(who: Principal | None) -> Caller:
    """The job owner a principal is (None: auth is off, or a trusted handle caller)."""
    if who is None or who.kind in ("master", "anonymous"):
        return Caller(MASTER_KEY_ID, None, True)
    if who.kind != "key":
        raise PermissionDeniedError(
            "Jobs, files and batches are owned by an API key: call with an API key or the"
            " master key",
            code="key_required",
        )
    return Caller(who.id, who.team, who.admin)


def require_admin(request: Request) -> Principal:
    who = principal(request)
    if who is None or not who.admin:
        raise PermissionDeniedError(
            "This route needs the master key or a key with the admin scope",
            code="admin_required",
        )
    return who


def id_param(value: str, name: str) -> str:
    """An id from a path or query: one the stores can look up (else it is a 400)."""
    if not storable(value) or len(value) > 200:
        raise InvalidRequestError(
            f"Invalid value for '{name}': not an id", param=name, code="invalid_value"
        )
    return value


def limit_param(request: Request, default: int = 20, most: int = 100) -> int:
    value = request.query_params.get("limit")
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= most:
        raise InvalidRequestError(
            f"Invalid value for 'limit': expected an integer from 1 to {most}",
            param="limit",
            code="invalid_value",
        )
    return int(value)


def page(items: list[dict[str, object]], limit: int) -> dict[str, object]:
    """An OpenAI list page of ``items`` (read with one more than ``limit``, to tell
    ``has_more``)."""
    data = items[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(items) > limit,
    }
