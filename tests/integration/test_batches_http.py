"""The Files and Batch APIs over HTTP, driven by the official ``openai`` client through
``httpx.ASGITransport`` on both databases: upload, a batch run to completed by a job runner
with a canned ``execute`` (and ``advance``), its output and error files (an invalid line
reported), retrieve, list, cancel, delete, keys seeing only their own, and refused uploads
(over the limit: 413 and nothing stored; not UTF-8: 400) and requests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import httpx
import httpx2
import openai
import orjson
import pytest
from fastapi import FastAPI, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from noa.access.identity import Principal
from noa.errors import InvalidRequestError
from noa.http.batches import BatchesApi, batches_router, files_router
from noa.http.render import error_response
from noa.jobs.batches import BatchStore
from noa.jobs.files import FileStore
from noa.jobs.model import Job
from noa.jobs.runner import JobRunner
from noa.jobs.store import JobStore
from noa.storage.db import Database

T0 = 1_763_856_000.0
CHAT: Final = "/v1/chat/completions"
LIMIT = 64 * 1024


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Keys:
    """Stands in for the gateway's auth: ``Bearer key_x`` is the API key ``key_x``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            auth = dict(scope["headers"]).get(b"authorization", b"").decode()
            key = auth.removeprefix("Bearer ")
            scope.setdefault("state", {})["principal"] = (
                Principal("master", "master") if key == "master" else Principal("key", key)
            )
        await self.app(scope, receive, send)


async def no_dns(host: str, port: int) -> Sequence[str]:
    return ["93.184.216.34"]


async def execute(job: Job) -> dict[str, Any]:
    content = job.body["messages"][0]["content"]
    if content == "refuse":
        raise InvalidRequestError("refused", param="messages", code="refused")
    return {"object": "chat.completion", "choices": [{"message": {"content": content.upper()}}]}


class Rig:
    def __init__(self, db: Database) -> None:
        self.clock = Clock()
        self.db = db
        self.jobs = JobStore(db, self.clock)
        self.files = FileStore(db, self.clock)
        self.batches = BatchStore(db, self.jobs, self.files, self.clock)
        self.runner = JobRunner(self.jobs, execute, owner="runner", clock=self.clock)
        self.woken = 0
        api = BatchesApi(
            self.files, self.batches, notify=self.wake, max_file_bytes=LIMIT, resolve=no_dns
        )
        app = FastAPI()
        app.include_router(files_router(api))
        app.include_router(batches_router(api))

        async def http_error(request: Request, exc: Exception) -> Response:
            return error_response(exc, "cid")

        app.add_exception_handler(Exception, http_error)
        self.app = Keys(app)

    def wake(self) -> None:
        self.woken += 1

    def client(self, key: str = "key_a") -> openai.AsyncOpenAI:
        http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=self.app))
        return openai.AsyncOpenAI(
            api_key=key, base_url="http://noa.test/v1", http_client=http, max_retries=0
        )

    async def run(self, client: openai.AsyncOpenAI, batch_id: str) -> Any:
        for _ in range(10):
            await self.batches.advance("advancer")
            await self.runner.run_burst()
            batch = await client.batches.retrieve(batch_id)
            if batch.status in ("completed", "failed", "expired", "cancelled"):
                return batch
        raise AssertionError(f"batch {batch_id} is still {batch.status}")


@pytest.fixture
async def rig(db: Database) -> AsyncIterator[Rig]:
    yield Rig(db)


def line(custom_id: str, content: str, **fields: Any) -> bytes:
    body = {"model": "gpt", "messages": [{"role": "user", "content": content}]}
    return orjson.dumps(
        {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body} | fields
    )


async def test_the_openai_batch_workflow(rig: Rig) -> None:
    client = rig.client()
    data = b"\n".join(
        [line("one", "hello"), b"{not json", line("two", "world"), line("three", "refuse")]
    )
    uploaded = await client.files.create(file=("requests.jsonl", data), purpose="batch")
    assert uploaded.object == "file" and uploaded.bytes == len(data)
    assert uploaded.filename == "requests.jsonl" and uploaded.purpose == "batch"
    assert (await client.files.retrieve(uploaded.id)).id == uploaded.id
    assert (await client.files.content(uploaded.id)).content == data

    batch = await client.batches.create(
        input_file_id=uploaded.id,
        endpoint=CHAT,
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    assert batch.status == "validating" and batch.metadata == {"job": "nightly"}
    assert rig.woken == 1
    done = await rig.run(client, batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (4, 2)
    assert done.request_counts.failed == 2
    assert done.completed_at == int(T0) and done.in_progress_at == int(T0)
    assert done.output_file_id and done.error_file_id

    out = (await client.files.content(done.output_file_id)).content.splitlines()
    answers = {r["custom_id"]: r for r in map(orjson.loads, out)}
    assert set(answers) == {"one", "two"}
    assert answers["one"]["response"]["status_code"] == 200
    assert answers["one"]["response"]["body"]["choices"][0]["message"]["content"] == "HELLO"
    errors = [
        orjson.loads(r)
        for r in (await client.files.content(done.error_file_id)).content.splitlines()
    ]
    assert [(e["custom_id"], e["error"] and e["error"]["code"]) for e in errors] == [
        (None, "invalid_json_line"),
        ("three", None),
    ]
    assert errors[1]["response"]["status_code"] == 400
    assert errors[1]["response"]["body"]["error"]["code"] == "refused"
    output_file = await client.files.retrieve(done.output_file_id)
    assert output_file.purpose == "batch_output"

    listed = await client.batches.list(limit=5)
    assert [b.id for b in listed.data] == [batch.id]
    files = await client.files.list(purpose="batch")
    assert [f.id for f in files.data] == [uploaded.id]
    deleted = await client.files.delete(uploaded.id)
    assert deleted.deleted and deleted.id == uploaded.id
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(uploaded.id)


async def test_cancel_and_callback_url(rig: Rig) -> None:
    client = rig.client()
    uploaded = await client.files.create(
        file=("in.jsonl", line("a", "x") + b"\n" + line("b", "y")), purpose="batch"
    )
    batch = await client.batches.create(
        input_file_id=uploaded.id,
        endpoint=CHAT,
        completion_window="24h",
        extra_body={"callback_url": "https://hooks.example.com/batches"},
    )
    await rig.batches.advance("advancer")
    cancelling = await client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at == int(T0)
    done = await rig.run(client, batch.id)
    assert done.status == "cancelled" and done.output_file_id is None
    assert done.request_counts is not None and done.request_counts.failed == 2
    with pytest.raises(openai.ConflictError):
        await client.batches.cancel(batch.id)
    row = await rig.db.fetchrow(
        "SELECT url, event_type FROM noa_webhook_deliveries WHERE subject_id = $1", batch.id
    )
    assert row == {"url": "https://hooks.example.com/batches", "event_type": "batch.cancelled"}
    with pytest.raises(openai.BadRequestError) as refused:
        await client.batches.create(
            input_file_id=uploaded.id,
            endpoint=CHAT,
            completion_window="24h",
            extra_body={"callback_url": "http://127.0.0.1:9/hook"},
        )
    assert refused.value.body["param"] == "callback_url"  # type: ignore[index]


async def test_keys_see_only_their_own(rig: Rig) -> None:
    mine, theirs, admin = rig.client("key_a"), rig.client("key_b"), rig.client("master")
    uploaded = await mine.files.create(file=("in.jsonl", line("a", "x")), purpose="batch")
    with pytest.raises(openai.NotFoundError):
        await theirs.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        await theirs.files.content(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        await theirs.files.delete(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        await theirs.batches.create(
            input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h"
        )
    batch = await mine.batches.create(
        input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h"
    )
    with pytest.raises(openai.NotFoundError):
        await theirs.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        await theirs.batches.cancel(batch.id)
    assert (await theirs.batches.list()).data == []
    assert (await theirs.files.list()).data == []
    assert [b.id for b in (await admin.batches.list()).data] == [batch.id]
    assert (await admin.files.retrieve(uploaded.id)).id == uploaded.id


async def test_refused_uploads_and_requests(rig: Rig) -> None:
    client = rig.client()
    with pytest.raises(openai.APIStatusError) as large:
        await client.files.create(file=("big.jsonl", b"x" * (LIMIT + 1)), purpose="batch")
    assert large.value.status_code == 413
    with pytest.raises(openai.BadRequestError) as binary:
        await client.files.create(file=("bin.jsonl", b"\x89PNG\r\n\x1a\n\xff"), purpose="batch")
    assert binary.value.body["code"] == "invalid_file"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as purpose:
        await client.files.create(file=("in.jsonl", b"{}"), purpose="fine-tune")
    assert purpose.value.body["param"] == "purpose"  # type: ignore[index]
    row = await rig.db.fetchrow("SELECT count(*) AS n FROM noa_files")
    assert row is not None and row["n"] == 0
    chunks = await rig.db.fetchrow("SELECT count(*) AS n FROM noa_file_chunks")
    assert chunks is not None and chunks["n"] == 0

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=rig.app), base_url="http://noa.test"
    ) as http:
        missing = await http.post("/v1/files", data={"purpose": "batch"})
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"
        two = await http.post(
            "/v1/files",
            data={"purpose": "batch"},
            files=[("file", ("a", b"{}")), ("file", ("b", b"{}"))],
        )
        assert two.status_code == 400
        order = await http.get("/v1/files?order=up")
        assert order.status_code == 400 and order.json()["error"]["param"] == "order"
        window = await http.post(
            "/v1/batches",
            json={"input_file_id": "file-x", "endpoint": CHAT, "completion_window": "1h"},
        )
        assert window.status_code == 400
        assert window.json()["error"]["param"] == "completion_window"
        gone = await http.get("/v1/batches/batch_nope")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "batch_not_found"
