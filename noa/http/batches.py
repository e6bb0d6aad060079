"""OpenAI's Files and Batch APIs, over NOA's file store and job system:

    POST   /v1/files                 multipart ``file`` + ``purpose`` ("batch") -> the file
    GET    /v1/files[?purpose=&limit=&after=&order=]   the caller's own (admins: everyone's)
    GET    /v1/files/{file_id}       the file object
    GET    /v1/files/{file_id}/content   its bytes, streamed
    DELETE /v1/files/{file_id}       {"id", "object": "file", "deleted": true}
    POST   /v1/batches               {"input_file_id", "endpoint", "completion_window",
                                     "metadata"; NOA's "callback_url"} -> the batch
    GET    /v1/batches[?limit=&after=], GET /v1/batches/{batch_id}
    POST   /v1/batches/{batch_id}/cancel

An upload is parsed by Starlette (its file part spooled to disk past 1 MB) and streamed from
there into the store, never held whole in memory; the body-size limit of ``/v1/files`` is the
app's ``body_limits`` entry, ``max_file_bytes`` the store's own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import ConfigDict, Field
from starlette.datastructures import UploadFile
from starlette.responses import StreamingResponse

from noa.errors import InvalidRequestError, NotFoundError
from noa.http.callers import caller, id_param, limit_param, page
from noa.http.render import NoaRoute, json_response
from noa.jobs.batches import BatchStore
from noa.jobs.files import FileStore
from noa.jobs.webhook_targets import Resolver, WebhookTargetError, check_target, system_resolver
from noa.observability.tracing import current_traceparent
from noa.wire.json_bounds import BoundedJson

READ_BYTES = 256 * 1024
MAX_FORM_FIELDS = 8


@dataclass
class BatchesApi:
    """What the file and batch routes work on. ``notify`` wakes whatever advances batches
    (one was created); ``max_file_bytes`` bounds an upload."""

    files: FileStore
    batches: BatchStore
    notify: Callable[[], None] = lambda: None
    max_file_bytes: int = 200 * 1024 * 1024
    webhook_allow: Sequence[str] = ()
    resolve: Resolver = system_resolver


class BatchCreate(BoundedJson):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    input_file_id: Annotated[str, Field(min_length=1, max_length=200)]
    endpoint: str = Field(description="/v1/chat/completions, /v1/completions or /v1/embeddings")
    completion_window: str = Field("24h", description="only '24h'")
    metadata: dict[str, Any] | None = None
    callback_url: Annotated[str, Field(min_length=1, max_length=2048)] | None = Field(
        None, description="NOA's extension: POSTed the finished batch, signed (Standard Webhooks)"
    )
    output_expires_after: dict[str, Any] | None = Field(
        None, description="accepted for compatibility; NOA keeps output files until deleted"
    )


def _missing_file(file_id: str) -> NotFoundError:
    return NotFoundError(f"No such File object: {file_id}", param="file_id", code="file_not_found")


def _missing_batch(batch_id: str) -> NotFoundError:
    return NotFoundError(f"No batch `{batch_id}`", param="batch_id", code="batch_not_found")


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while data := await upload.read(READ_BYTES):
        yield data


def files_router(api: BatchesApi) -> APIRouter:
    router = APIRouter(route_class=NoaRoute)
    files = api.files

    async def create_file(request: Request) -> Response:
        who = caller(request)
        form = await request.form(max_files=2, max_fields=MAX_FORM_FIELDS)
        try:
            if len(form.getlist("file")) > 1:  # checked here, whatever the parser let through
                raise InvalidRequestError(
                    "Only one 'file' part may be uploaded at a time",
                    param="file",
                    code="invalid_value",
                )
            upload, purpose = form.get("file"), form.get("purpose")
            if not isinstance(upload, UploadFile):
                raise InvalidRequestError(
                    "Missing required parameter: 'file' (a multipart file part)",
                    param="file",
                    code="missing_required_parameter",
                )
            if not isinstance(purpose, str):
                raise InvalidRequestError(
                    "Missing required parameter: 'purpose'.",
                    param="purpose",
                    code="missing_required_parameter",
                )
            file = await files.create(
                who.key_id, purpose, upload.filename or "file", _chunks(upload), api.max_file_bytes
            )
        finally:
            await form.close()
        return json_response(file.public())

    async def list_files(request: Request) -> Response:
        who = caller(request)
        limit = limit_param(request, default=100, most=10_000)
        after = request.query_params.get("after")
        purpose = request.query_params.get("purpose")
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequestError(
                "Invalid value for 'order': expected 'asc' or 'desc'",
                param="order",
                code="invalid_value",
            )
        found = await files.list(
            who.scope,
            id_param(purpose, "purpose") if purpose is not None else None,
            limit + 1,
            id_param(after, "after") if after else None,
            "asc" if order == "asc" else "desc",
        )
        return json_response(page([f.public() for f in found], limit))

    async def get_file(request: Request, file_id: str) -> Response:
        found = await files.get(id_param(file_id, "file_id"), caller(request).scope)
        if found is None:
            raise _missing_file(file_id)
        return json_response(found.public())

    async def file_content(request: Request, file_id: str) -> Response:
        found = await files.get(id_param(file_id, "file_id"), caller(request).scope)
        if found is None:
            raise _missing_file(file_id)
        return StreamingResponse(
            files.content(found.id),
            media_type="application/octet-stream",
            headers={"content-length": str(found.bytes)},
        )

    async def delete_file(request: Request, file_id: str) -> Response:
        if not await files.delete(id_param(file_id, "file_id"), caller(request).scope):
            raise _missing_file(file_id)
        return json_response({"id": file_id, "object": "file", "deleted": True})

    routes: list[tuple[str, Callable[..., Any], str, str]] = [
        ("/v1/files", create_file, "POST", "Upload a file (multipart: file, purpose=batch)"),
        ("/v1/files", list_files, "GET", "List the caller's files"),
        ("/v1/files/{file_id}", get_file, "GET", "Show a file"),
        ("/v1/files/{file_id}/content", file_content, "GET", "A file's content, streamed"),
        ("/v1/files/{file_id}", delete_file, "DELETE", "Delete a file"),
    ]
    for path, handler, method, summary in routes:
        router.add_api_route(
            path,
            handler,
            methods=[method],
            tags=["Files"],
            summary=summary,
            operation_id=f"{handler.__name__}_{method.lower()}",
        )
    return router


def batches_router(api: BatchesApi) -> APIRouter:
    router = APIRouter(route_class=NoaRoute)
    store = api.batches

    async def checked_callback(url: str | None) -> str | None:
        if url is None:
            return None
        try:
            await check_target(url, allow=api.webhook_allow, resolve=api.resolve)
        except WebhookTargetError as e:
            e.param = "callback_url"
            raise
        except (ValueError, UnicodeError) as e:
            raise WebhookTargetError(f"callback_url is not a usable URL: {e}") from None
        return url

    async def create_batch(request: Request, body: BatchCreate) -> Response:
        who = caller(request)
        created = await store.create(
            key_id=who.key_id,
            team=who.team,
            input_file_id=id_param(body.input_file_id, "input_file_id"),
            endpoint=body.endpoint,
            completion_window=body.completion_window,
            metadata=body.metadata,
            callback_url=await checked_callback(body.callback_url),
            scope=who.scope,
            traceparent=current_traceparent(),
        )
        api.notify()
        return json_response(created.public())

    async def list_batches(request: Request) -> Response:
        limit = limit_param(request)
        after = request.query_params.get("after")
        found = await store.list(
            caller(request).scope, limit + 1, id_param(after, "after") if after else None
        )
        return json_response(page([b.public() for b in found], limit))

    async def get_batch(request: Request, batch_id: str) -> Response:
        found = await store.get(id_param(batch_id, "batch_id"), caller(request).scope)
        if found is None:
            raise _missing_batch(batch_id)
        return json_response(found.public())

    async def cancel_batch(request: Request, batch_id: str) -> Response:
        found = await store.cancel(id_param(batch_id, "batch_id"), caller(request).scope)
        if found is None:
            raise _missing_batch(batch_id)
        api.notify()
        return json_response(found.public())

    routes: list[tuple[str, Callable[..., Any], str, str]] = [
        ("/v1/batches", create_batch, "POST", "Create a batch over an uploaded JSONL file"),
        ("/v1/batches", list_batches, "GET", "List the caller's batches, newest first"),
        ("/v1/batches/{batch_id}", get_batch, "GET", "Show a batch"),
        ("/v1/batches/{batch_id}/cancel", cancel_batch, "POST", "Cancel a batch"),
    ]
    for path, handler, method, summary in routes:
        router.add_api_route(
            path,
            handler,
            methods=[method],
            tags=["Batches"],
            summary=summary,
            operation_id=f"{handler.__name__}_{method.lower()}",
        )
    return router
