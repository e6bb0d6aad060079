"""The job API: durable background requests, run later by the job runners.

POST   /v1/jobs                  {"endpoint", "body", "priority", "callback_url", "metadata",
                                 "run_at", "max_attempts"} (Idempotency-Key) -> 202 the job
GET    /v1/jobs[?status=&limit=&after=]   the caller's own (admins: everyone's)
GET    /v1/jobs/{id}             the job, its attempts and its webhook deliveries
DELETE /v1/jobs/{id}             cancel a queued or running job
GET    /v1/admin/jobs[?status=&key_id=&limit=&after=], GET /v1/admin/jobs/{id}
POST   /v1/admin/jobs/{id}/redrive   a dead or failed job queued again
GET    /v1/admin/jobs/stats      jobs by status
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import ConfigDict, Field

from noa.errors import ConflictError, InvalidRequestError, NotFoundError
from noa.http.callers import Caller, caller, id_param, limit_param, page, require_admin
from noa.http.render import NoaRoute, json_response
from noa.jobs.client import wait_until_final
from noa.jobs.executor import job_request
from noa.jobs.model import MAX_ATTEMPTS, Job, JobSpec, JobStatus, Priority
from noa.jobs.schedules import ScheduleStore
from noa.jobs.store import JobStore
from noa.jobs.webhook_targets import Resolver, WebhookTargetError, check_target, system_resolver
from noa.observability.tracing import current_traceparent
from noa.wire.fields import storable
from noa.wire.json_bounds import BoundedJson
from noa.wire.validation import parse

MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z
MAX_METADATA_BYTES = 16 * 1024
MAX_IDEMPOTENCY_KEY = 255
MAX_WAIT_S = 60.0
Endpoint = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
Deliveries = Callable[[str, str], Awaitable[list[dict[str, Any]]]]


@dataclass
class JobsApi:
    """What the job, schedule, file and batch routes work on. ``notify`` wakes a runner (a
    job was submitted); ``deliveries(kind, id)`` shows a subject's webhook attempts."""

    store: JobStore
    schedules: ScheduleStore
    notify: Callable[[], None] = lambda: None
    webhook_allow: Sequence[str] = ()
    resolve: Resolver = system_resolver
    deliveries: Deliveries | None = None
    callbacks: bool = True  # False: no signing secret is configured, callback_url is a 400


class _Body(BoundedJson):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class JobFields(_Body):
    endpoint: Endpoint = Field(description="the synchronous endpoint the body is a request of")
    body: dict[str, Any] = Field(description="the request, as that endpoint takes it")
    priority: Literal["high", "medium", "low"] = "medium"
    callback_url: Annotated[str, Field(min_length=1, max_length=2048)] | None = Field(
        None, description="POSTed the finished job, signed (Standard Webhooks)"
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    max_attempts: int = Field(3, ge=1, le=MAX_ATTEMPTS)


class JobCreate(JobFields):
    run_at: float | datetime | None = Field(
        None, description="when to run it: Unix seconds or an ISO 8601 time (default: now)"
    )


def unix_time(value: float | datetime | None, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        seconds = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    else:
        seconds = float(value)
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_TIME):
        raise InvalidRequestError(
            f"Invalid value for '{name}': a time from 1970 to 9999",
            param=name,
            code="invalid_value",
        )
    return seconds


def check_metadata(metadata: dict[str, Any]) -> None:
    if len(orjson.dumps(metadata)) > MAX_METADATA_BYTES:
        raise InvalidRequestError(
            f"Invalid value for 'metadata': larger than {MAX_METADATA_BYTES} bytes as JSON",
            param="metadata",
            code="invalid_value",
        )


async def checked_callback(api: JobsApi, url: str | None) -> str | None:
    """The callback URL, if NOA may post to it (resolved now; again at each delivery)."""
    if url is None:
        return None
    if not api.callbacks:
        raise InvalidRequestError(
            "Webhooks are not configured on this server (no signing secret: set"
            " NOA_WEBHOOK_SECRET to whsec_<base64>), so callback_url cannot be used",
            param="callback_url",
            code="webhooks_not_configured",
        )
    try:
        await check_target(url, allow=api.webhook_allow, resolve=api.resolve)
    except WebhookTargetError as e:
        e.param = "callback_url"
        raise
    except (ValueError, UnicodeError) as e:
        raise WebhookTargetError(f"callback_url is not a usable URL: {e}") from None
    return url


def idempotency_key(request: Request) -> str | None:
    value = request.headers.get("idempotency-key")
    if value is None:
        return None
    if not value or len(value) > MAX_IDEMPOTENCY_KEY or not storable(value):
        raise InvalidRequestError(
            f"Invalid Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY} printable characters",
            param="Idempotency-Key",
            code="invalid_value",
        )
    return value


def status_param(request: Request) -> JobStatus | None:
    value = request.query_params.get("status")
    if value is None:
        return None
    try:
        return JobStatus(value)
    except ValueError:
        raise InvalidRequestError(
            f"Invalid value for 'status': expected one of {', '.join(s.value for s in JobStatus)}",
            param="status",
            code="invalid_value",
        ) from None


async def submit(
    api: JobsApi, body: JobCreate | Mapping[str, Any], who: Caller, idempotency: str | None
) -> tuple[Job, bool]:
    """Submit a job as ``who``: (the job, True), or the job an earlier submit with the same
    ``idempotency`` key made (a 409 when that was another request). HTTP and handle callers
    alike; a runner is woken for a new job."""
    if not isinstance(body, JobCreate):
        body = parse(JobCreate, body)
    assert isinstance(body, JobCreate)
    _, validated = job_request(body.endpoint, body.body)
    check_metadata(body.metadata)
    spec = JobSpec(
        endpoint=body.endpoint,
        body=validated,
        priority=Priority.of(body.priority),
        callback_url=await checked_callback(api, body.callback_url),
        metadata=body.metadata,
        run_at=unix_time(body.run_at, "run_at"),
        max_attempts=body.max_attempts,
        key_id=who.key_id,
        team=who.team,
        idempotency_key=idempotency,
        traceparent=current_traceparent(),
    )
    job, created = await api.store.submit(spec)
    if created:
        api.notify()
    elif (job.endpoint, job.body) != (spec.endpoint, dict(spec.body)):
        raise ConflictError(
            "This Idempotency-Key was used for another request: use a new key for a new job",
            param="Idempotency-Key",
            code="idempotency_key_reused",
        )
    return job, created


def wait_param(request: Request) -> float:
    """``?wait=`` seconds (0 to 60) a GET may hold until the job is final."""
    value = request.query_params.get("wait")
    if value is None:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_WAIT_S:  # NaN fails this too
        raise InvalidRequestError(
            f"Invalid value for 'wait': seconds from 0 to {MAX_WAIT_S:g}",
            param="wait",
            code="invalid_value",
        )
    return seconds


def _missing(job_id: str) -> NotFoundError:
    return NotFoundError(f"No job `{job_id}`", param="job_id", code="job_not_found")


def jobs_router(api: JobsApi) -> APIRouter:
    router = APIRouter(route_class=NoaRoute)
    store = api.store

    async def shown(job: Job) -> dict[str, Any]:
        body = job.public()
        body["attempt_history"] = [a.public() for a in await store.attempts(job.id)]
        if api.deliveries is not None and job.callback_url is not None:
            body["webhook_deliveries"] = await api.deliveries("job", job.id)
        return body

    async def create_job(request: Request, body: JobCreate) -> Response:
        job, created = await submit(api, body, caller(request), idempotency_key(request))
        if created:
            return json_response(job.public(), 202, {"location": f"/v1/jobs/{job.id}"})
        return json_response(job.public(), 202, {"idempotent-replayed": "true"})

    async def list_jobs(request: Request) -> Response:
        who = caller(request)
        limit = limit_param(request)
        after = request.query_params.get("after")
        found = await store.list(
            who.scope, status_param(request), limit + 1, id_param(after, "after") if after else None
        )
        return json_response(page([j.public() for j in found], limit))

    async def get_job(request: Request, job_id: str) -> Response:
        who = caller(request)
        wait = wait_param(request)
        if wait:  # long poll: the job once it is final, or as it stands after `wait` seconds
            job = await wait_until_final(store, id_param(job_id, "job_id"), who.scope, wait)
        else:
            job = await store.get(id_param(job_id, "job_id"), who.scope)
        if job is None:
            raise _missing(job_id)
        return json_response(await shown(job))

    async def cancel_job(request: Request, job_id: str) -> Response:
        who = caller(request)
        job = await store.cancel(id_param(job_id, "job_id"), who.scope)
        if job is None:
            raise _missing(job_id)
        if job.status != JobStatus.CANCELLED:  # cancelled already: the same answer again
            raise ConflictError(
                f"Job `{job_id}` is already {job.status.value}: only a queued or running job"
                " can be cancelled",
                param="job_id",
                code="job_finished",
            )
        return json_response(job.public())

    async def admin_list(request: Request) -> Response:
        require_admin(request)
        limit = limit_param(request)
        after = request.query_params.get("after")
        key_id = request.query_params.get("key_id")
        found = await store.list(
            id_param(key_id, "key_id") if key_id is not None else None,
            status_param(request),
            limit + 1,
            id_param(after, "after") if after else None,
        )
        return json_response(page([j.public() | {"key_id": j.key_id} for j in found], limit))

    async def admin_get(request: Request, job_id: str) -> Response:
        require_admin(request)
        job = await store.get(id_param(job_id, "job_id"))
        if job is None:
            raise _missing(job_id)
        return json_response(await shown(job) | {"key_id": job.key_id})

    async def redrive(request: Request, job_id: str) -> Response:
        require_admin(request)
        job = await store.redrive(id_param(job_id, "job_id"))
        if job is None:
            current = await store.get(job_id)
            if current is None:
                raise _missing(job_id)
            raise ConflictError(
                f"Job `{job_id}` is {current.status.value}: only a dead or failed job can be"
                " re-driven",
                param="job_id",
                code="job_not_dead",
            )
        api.notify()
        return json_response(job.public() | {"key_id": job.key_id})

    async def stats(request: Request) -> Response:
        require_admin(request)
        return json_response({"object": "job.stats", "by_status": await store.depth()})

    routes: list[tuple[str, Callable[..., Any], str, str, str]] = [
        ("/v1/jobs", create_job, "POST", "Jobs", "Submit a job (202; Idempotency-Key honoured)"),
        ("/v1/jobs", list_jobs, "GET", "Jobs", "List the caller's jobs, newest first"),
        ("/v1/jobs/{job_id}", get_job, "GET", "Jobs", "Show a job, its attempts and webhooks"),
        ("/v1/jobs/{job_id}", cancel_job, "DELETE", "Jobs", "Cancel a queued or running job"),
        ("/v1/admin/jobs/stats", stats, "GET", "Admin", "Jobs by status"),
        ("/v1/admin/jobs", admin_list, "GET", "Admin", "List every key's jobs"),
        ("/v1/admin/jobs/{job_id}", admin_get, "GET", "Admin", "Show any job"),
        ("/v1/admin/jobs/{job_id}/redrive", redrive, "POST", "Admin", "Queue a dead job again"),
    ]
    for path, handler, method, tag, summary in routes:
        router.add_api_route(
            path,
            handler,
            methods=[method],
            tags=[tag],
            summary=summary,
            operation_id=f"{handler.__name__}_{method.lower()}",
            status_code=202 if handler is create_job else 200,
        )
    return router
