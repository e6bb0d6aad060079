"""Recurring jobs, managed by admins: each due time of a cron expression (in a time zone) runs
one job, however many runners there are (``noa/jobs/schedules.py``).

    POST   /v1/admin/schedules        {"cron", "timezone", "endpoint", "body", "name", "priority",
                                       "callback_url", "metadata", "max_attempts", "enabled",
                                       "key_id"} -> 201 the schedule (its next_due_at)
    GET    /v1/admin/schedules[?key_id=&limit=&after=]
    GET    /v1/admin/schedules/{id}
    PATCH  /v1/admin/schedules/{id}   any of the fields above
    DELETE /v1/admin/schedules/{id}   (its jobs stay)

A schedule's jobs are billed to ``key_id`` (default: the caller's key, or the master key).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import Field

from noa.errors import NotFoundError
from noa.http.callers import caller, id_param, limit_param, page, require_admin
from noa.http.jobs import Endpoint, JobFields, JobsApi, _Body, check_metadata, checked_callback
from noa.http.render import NoaRoute, json_response
from noa.jobs.executor import job_request
from noa.jobs.model import MAX_ATTEMPTS
from noa.jobs.schedules import Schedule, ScheduleSpec
from noa.wire.fields import Name

Cron = Annotated[str, Field(min_length=1, max_length=200, description="5 fields, or @daily...")]
Zone = Annotated[str, Field(min_length=1, max_length=64, description="an IANA time zone")]


class ScheduleCreate(JobFields):
    cron: Cron
    timezone: Zone = "UTC"
    name: Annotated[str, Field(max_length=200)] | None = None
    enabled: bool = True
    key_id: Name | None = Field(None, description="the key its jobs are billed to")


class ScheduleChange(_Body):
    cron: Cron | None = None
    timezone: Zone | None = None
    endpoint: Endpoint | None = None
    body: dict[str, Any] | None = None
    name: Annotated[str, Field(max_length=200)] | None = None
    priority: Literal["high", "medium", "low"] | None = None
    callback_url: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    metadata: dict[str, Any] | None = None
    max_attempts: int | None = Field(None, ge=1, le=MAX_ATTEMPTS)
    enabled: bool | None = None
    key_id: Name | None = None


def _missing(schedule_id: str) -> NotFoundError:
    return NotFoundError(
        f"No schedule `{schedule_id}`", param="schedule_id", code="schedule_not_found"
    )


def schedules_router(api: JobsApi) -> APIRouter:
    router = APIRouter(route_class=NoaRoute)
    store = api.schedules

    async def create_schedule(request: Request, body: ScheduleCreate) -> Response:
        require_admin(request)
        _, validated = job_request(body.endpoint, body.body)
        check_metadata(body.metadata)
        spec = ScheduleSpec(
            cron=body.cron,
            endpoint=body.endpoint,
            body=validated,
            timezone=body.timezone,
            name=body.name,
            key_id=body.key_id if body.key_id is not None else caller(request).key_id,
            priority=body.priority,  # type: ignore[arg-type]  # a name: ScheduleSpec parses it
            callback_url=await checked_callback(api, body.callback_url),
            metadata=body.metadata,
            max_attempts=body.max_attempts,
            enabled=body.enabled,
        )
        schedule = await store.create(spec)
        return json_response(schedule.public(), 201)

    async def list_schedules(request: Request) -> Response:
        require_admin(request)
        limit = limit_param(request)
        key_id = request.query_params.get("key_id")
        after = request.query_params.get("after")
        found = await store.list(
            id_param(key_id, "key_id") if key_id is not None else None,
            limit + 1,
            id_param(after, "after") if after else None,
        )
        return json_response(page([s.public() for s in found], limit))

    async def get_schedule(request: Request, schedule_id: str) -> Response:
        require_admin(request)
        return json_response((await _found(schedule_id)).public())

    async def update_schedule(request: Request, schedule_id: str, body: ScheduleChange) -> Response:
        require_admin(request)
        current = await _found(schedule_id)
        changes = body.model_dump(exclude_unset=True)
        if changes.get("endpoint") is None:
            changes.pop("endpoint", None)
        if "body" in changes or "endpoint" in changes:
            endpoint = changes.get("endpoint", current.spec.endpoint)
            given = changes.get("body")
            _, changes["body"] = job_request(
                endpoint, given if given is not None else dict(current.spec.body)
            )
        if "callback_url" in changes:
            changes["callback_url"] = await checked_callback(api, changes["callback_url"])
        if changes.get("metadata") is not None:
            check_metadata(changes["metadata"])
        for name in ("cron", "timezone", "priority", "metadata", "max_attempts", "enabled"):
            if name in changes and changes[name] is None:
                del changes[name]  # null leaves a required field as it is
        if "key_id" in changes and changes["key_id"] is None:
            changes["key_id"] = caller(request).key_id
        updated = await store.update(current.id, **changes)
        if updated is None:
            raise _missing(schedule_id)
        return json_response(updated.public())

    async def delete_schedule(request: Request, schedule_id: str) -> Response:
        require_admin(request)
        if not await store.delete(id_param(schedule_id, "schedule_id")):
            raise _missing(schedule_id)
        return json_response({"id": schedule_id, "object": "job.schedule", "deleted": True})

    async def _found(schedule_id: str) -> Schedule:
        schedule = await store.get(id_param(schedule_id, "schedule_id"))
        if schedule is None:
            raise _missing(schedule_id)
        return schedule

    routes: list[tuple[str, Callable[..., Any], str, str]] = [
        ("/v1/admin/schedules", create_schedule, "POST", "Create a recurring job (cron, zone)"),
        ("/v1/admin/schedules", list_schedules, "GET", "List schedules, oldest first"),
        ("/v1/admin/schedules/{schedule_id}", get_schedule, "GET", "Show a schedule"),
        ("/v1/admin/schedules/{schedule_id}", update_schedule, "PATCH", "Change a schedule"),
        ("/v1/admin/schedules/{schedule_id}", delete_schedule, "DELETE", "Delete a schedule"),
    ]
    for path, handler, method, summary in routes:
        router.add_api_route(
            path,
            handler,
            methods=[method],
            tags=["Admin"],
            summary=summary,
            operation_id=f"{handler.__name__}_{method.lower()}",
            status_code=201 if handler is create_schedule else 200,
        )
    return router
