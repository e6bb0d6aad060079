"""The admin API (``/v1/admin/...``: the master key or a key with the ``admin`` scope) and each
caller's own usage (``GET /v1/usage``).

    POST   /v1/admin/keys                create (the secret is in this answer only)
    GET    /v1/admin/keys[?team=&include_revoked=true]
    GET    /v1/admin/keys/{id}
    DELETE /v1/admin/keys/{id}           revoke (also POST /v1/admin/keys/{id}/revoke)
    POST   /v1/admin/keys/{id}/rotate    a new secret, same settings; the old one is revoked
    PUT    /v1/admin/teams/{id}          create or replace a team's limits, budget and models
    GET    /v1/admin/teams[/{id}], DELETE /v1/admin/teams/{id}
    GET    /v1/admin/usage?group_by=key|team|model|provider|day[&start=&end=&key_id=&team=]
    GET    /v1/usage[?group_by=model|day|provider&start=&end=]   the caller's own
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import ConfigDict, Field

from noa.access.identity import Authenticator, Principal
from noa.access.keys import KeyStore, Limits, TeamStore
from noa.access.limiter import Limiter
from noa.access.records import RecordError
from noa.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from noa.http.render import NoaRoute, json_response
from noa.storage.usage import GroupBy, UsageQueries
from noa.wire.fields import Name, name_problem, storable
from noa.wire.json_bounds import BoundedJson

Clock = Callable[[], float]
MAX_RATE = 10**12  # requests or tokens per minute
MAX_BUDGET_USD = 1e12
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z, the last moment a date can show
ShortName = Annotated[Name, Field(max_length=200)]


@dataclass
class Admin:
    keys: KeyStore
    teams: TeamStore
    usage: UsageQueries
    auth: Authenticator
    limiter: Limiter | None = None
    clock: Clock = time.time


class _Body(BoundedJson):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LimitFields(_Body):
    rpm: int | None = Field(None, gt=0, le=MAX_RATE, description="requests per minute")
    tpm: int | None = Field(None, gt=0, le=MAX_RATE, description="tokens per minute")
    budget_usd: float | None = Field(
        None, ge=0, le=MAX_BUDGET_USD, description="USD per budget period"
    )
    budget_period: Literal["day", "week", "month", "total"] = Field(
        "month", description="the budget's period (UTC)"
    )
    models: list[Name] | None = Field(
        None, max_length=1000, description="models allowed (default: all)"
    )
    metadata: dict[str, Any] = Field(default_factory=dict)

    def limits(self) -> Limits:
        period = self.budget_period if self.budget_usd is not None else None
        return Limits(self.rpm, self.tpm, self.budget_usd, period)


class KeyCreate(LimitFields):
    name: ShortName | None = None
    team: ShortName | None = None
    scopes: list[Literal["admin"]] = Field(default_factory=list)
    expires_at: float | None = Field(
        None, ge=0, le=MAX_TIME, description="Unix time the key stops working"
    )
    expires_in_s: float | None = Field(None, gt=0, le=MAX_TIME, description="or: seconds from now")


def _team_id(team_id: str) -> str:
    """A team id from the URL, as a new team's name."""
    problem = name_problem(team_id) or (
        "is longer than 200 characters" if len(team_id) > 200 else None
    )
    if problem is not None:
        raise InvalidRequestError(
            f"Invalid value for 'team_id': {problem}", param="team_id", code="invalid_value"
        )
    return team_id


def _filter(request: Request, name: str) -> str | None:
    """A query parameter that filters by a key or team id."""
    value = request.query_params.get(name)
    if value is not None and not storable(value):
        raise InvalidRequestError(
            f"Invalid value for '{name}': not a key or team id", param=name, code="invalid_value"
        )
    return value


def _principal(request: Request) -> Principal | None:
    principal: Principal | None = request.scope.get("state", {}).get("principal")
    return principal


def _require_admin(request: Request) -> Principal:
    principal = _principal(request)
    if principal is None or not principal.admin:
        raise PermissionDeniedError(
            "This route needs the master key or a key with the admin scope",
            code="admin_required",
        )
    return principal


def _time(request: Request, name: str) -> float | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        raise InvalidRequestError(f"Invalid value for '{name}': expected Unix seconds", param=name)
    return seconds


GROUPS = ("key", "team", "model", "provider", "day")


def _group(request: Request, allowed: tuple[str, ...], default: str) -> GroupBy:
    value = request.query_params.get("group_by", default)
    if value not in allowed:
        raise InvalidRequestError(
            f"Invalid value for 'group_by': expected one of {', '.join(allowed)}",
            param="group_by",
        )
    return value  # type: ignore[return-value]


def admin_router(admin: Admin) -> APIRouter:
    router = APIRouter(route_class=NoaRoute)
    tags: list[Any] = ["Admin"]

    async def create_key(request: Request, body: KeyCreate) -> Response:
        _require_admin(request)
        expires = body.expires_at
        if body.expires_in_s is not None:
            expires = admin.clock() + body.expires_in_s
            if expires > MAX_TIME:
                raise InvalidRequestError(
                    "Invalid value for 'expires_in_s': the key would expire after the year 9999",
                    param="expires_in_s",
                )
        try:
            if body.team is not None and await admin.teams.get(body.team) is None:
                await admin.teams.put(body.team)  # a team is created by its first key
            secret, key = await admin.keys.create(
                name=body.name,
                team=body.team,
                scopes=body.scopes,
                models=body.models,
                limits=body.limits(),
                metadata=body.metadata,
                expires_at=expires,
            )
        except RecordError as e:
            raise InvalidRequestError(f"{e}", code="invalid_value") from None
        return json_response({"key": secret, **key.public(admin.clock())}, 201)

    async def list_keys(request: Request) -> Response:
        _require_admin(request)
        team = _filter(request, "team")
        revoked = request.query_params.get("include_revoked", "false").lower() == "true"
        now = admin.clock()
        keys = await admin.keys.list(team=team, include_revoked=revoked)
        return json_response({"object": "list", "data": [k.public(now) for k in keys]})

    async def get_key(request: Request, key_id: str) -> Response:
        _require_admin(request)
        key = await admin.keys.get(key_id) if storable(key_id) else None
        if key is None:
            raise NotFoundError(f"No API key `{key_id}`", code="key_not_found")
        return json_response(key.public(admin.clock()))

    async def _revoked(key_id: str) -> None:
        admin.auth.invalidate(key_id)
        if admin.limiter is not None:
            await admin.limiter.revoke(key_id)  # every replica refuses it from now on

    async def revoke_key(request: Request, key_id: str) -> Response:
        _require_admin(request)
        key = await admin.keys.revoke(key_id) if storable(key_id) else None
        if key is None:
            raise NotFoundError(f"No API key `{key_id}`", code="key_not_found")
        await _revoked(key_id)
        return json_response(key.public(admin.clock()))

    async def rotate_key(request: Request, key_id: str) -> Response:
        _require_admin(request)
        rotated = await admin.keys.rotate(key_id) if storable(key_id) else None
        if rotated is None:
            raise NotFoundError(f"No active API key `{key_id}`", code="key_not_found")
        await _revoked(key_id)
        secret, key = rotated
        return json_response({"key": secret, **key.public(admin.clock())}, 201)

    async def put_team(request: Request, team_id: str, body: LimitFields) -> Response:
        _require_admin(request)
        try:
            team = await admin.teams.put(
                _team_id(team_id), body.limits(), body.models, body.metadata
            )
        except RecordError as e:
            raise InvalidRequestError(f"{e}", code="invalid_value") from None
        admin.auth.invalidate()  # keys of the team carry its limits
        return json_response(team.public())

    async def list_teams(request: Request) -> Response:
        _require_admin(request)
        teams = await admin.teams.list()
        return json_response({"object": "list", "data": [t.public() for t in teams]})

    async def get_team(request: Request, team_id: str) -> Response:
        _require_admin(request)
        team = await admin.teams.get(team_id) if storable(team_id) else None
        if team is None:
            raise NotFoundError(f"No team `{team_id}`", code="team_not_found")
        return json_response(team.public())

    async def delete_team(request: Request, team_id: str) -> Response:
        _require_admin(request)
        if not (storable(team_id) and await admin.teams.delete(team_id)):
            raise NotFoundError(f"No team `{team_id}`", code="team_not_found")
        admin.auth.invalidate()
        return json_response({"id": team_id, "deleted": True})

    async def usage_summary(request: Request) -> Response:
        _require_admin(request)
        group = _group(request, GROUPS, "day")
        rows = await admin.usage.summary(
            group,
            start=_time(request, "start"),
            end=_time(request, "end"),
            key_id=_filter(request, "key_id"),
            team=_filter(request, "team"),
        )
        return json_response({"object": "list", "group_by": group, "data": rows})

    async def own_usage(request: Request) -> Response:
        principal = _principal(request)
        if principal is None or principal.kind not in ("key", "jwt"):
            raise PermissionDeniedError(
                "GET /v1/usage reports an API key's own usage: call it with that key"
                " (the master key sees everything at /v1/admin/usage)",
                code="key_required",
            )
        group = _group(request, ("model", "provider", "day"), "day")
        start, end = _time(request, "start"), _time(request, "end")
        rows = await admin.usage.summary(group, start=start, end=end, key_id=principal.id)
        recent = await admin.usage.records(key_id=principal.id, start=start, end=end, limit=100)
        body = {"object": "usage", "key_id": principal.id, "group_by": group, "data": rows}
        return json_response(body | {"recent": recent})

    routes: list[tuple[str, Callable[..., Any], str, str]] = [
        ("/v1/admin/keys", create_key, "POST", "Create an API key (its secret is shown once)"),
        ("/v1/admin/keys", list_keys, "GET", "List API keys"),
        ("/v1/admin/keys/{key_id}", get_key, "GET", "Show an API key"),
        ("/v1/admin/keys/{key_id}", revoke_key, "DELETE", "Revoke an API key"),
        ("/v1/admin/keys/{key_id}/revoke", revoke_key, "POST", "Revoke an API key"),
        ("/v1/admin/keys/{key_id}/rotate", rotate_key, "POST", "Rotate an API key's secret"),
        ("/v1/admin/teams", list_teams, "GET", "List teams"),
        ("/v1/admin/teams/{team_id}", put_team, "PUT", "Create or replace a team"),
        ("/v1/admin/teams/{team_id}", get_team, "GET", "Show a team"),
        ("/v1/admin/teams/{team_id}", delete_team, "DELETE", "Delete a team"),
        ("/v1/admin/usage", usage_summary, "GET", "Usage summed by key, team, model or day"),
        ("/v1/usage", own_usage, "GET", "The calling key's own usage"),
    ]
    for path, handler, method, summary in routes:
        router.add_api_route(
            path,
            handler,
            methods=[method],
            tags=tags,
            summary=summary,
            operation_id=f"{handler.__name__}_{method.lower()}",
        )
    return router
