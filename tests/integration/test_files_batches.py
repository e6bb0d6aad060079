"""Files and batches over the real stores on both databases: uploads streamed in UTF-8 chunks
(a character split across chunks, limits, non-UTF-8 and NUL refused with nothing left behind,
memory flat for a 32 MB file), line streaming, and batches through the job runner with a
canned ``execute``: output and error files, invalid and duplicate lines, a batch with no valid
line failing, an advance killed mid-file resuming without duplicates, cancel, expiry on an
injected clock, leases between two advancers, and the webhook enqueued as a batch ends."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from noa.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
)
from noa.jobs.batch_sql import BatchStatus
from noa.jobs.batches import BatchStore
from noa.jobs.files import CHUNK_BYTES, FileStore
from noa.jobs.model import Job, JobSpec, JobStatus, Priority
from noa.jobs.runner import JobRunner
from noa.jobs.store import JobStore
from noa.storage.db import Database

T0 = 1_763_856_000.0
CHAT = "/v1/chat/completions"
KEY = "key_a"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


async def pieces(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def request(custom_id: str, content: str, **fields: Any) -> str:
    body = {"model": "gpt", "messages": [{"role": "user", "content": content}]}
    line = {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body} | fields
    return orjson.dumps(line).decode()


def jsonl(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


async def execute(job: Job) -> dict[str, Any]:
    content = job.body["messages"][0]["content"]
    if content == "bad":
        raise InvalidRequestError("the model refused", param="messages", code="refused")
    return {"object": "chat.completion", "echo": content}


class Rig:
    def __init__(self, db: Database, group_size: int = 500) -> None:
        self.clock = Clock()
        self.db = db
        self.jobs = JobStore(db, self.clock)
        self.files = FileStore(db, self.clock)
        self.batches = BatchStore(db, self.jobs, self.files, self.clock, group_size=group_size)
        self.runner = JobRunner(self.jobs, execute, owner="runner", clock=self.clock)

    async def upload(self, data: bytes, key_id: str = KEY) -> str:
        file = await self.files.create(key_id, "batch", "in.jsonl", pieces(data), 10**9)
        return file.id

    async def batch(self, data: bytes, **fields: Any) -> str:
        file_id = await self.upload(data)
        created = await self.batches.create(
            key_id=KEY, team=None, input_file_id=file_id, endpoint=CHAT, **fields
        )
        return created.id

    async def settle(self, batch_id: str, rounds: int = 10) -> BatchStatus:
        for _ in range(rounds):
            await self.batches.advance("advancer", 60.0)
            await self.runner.run_burst()
            found = await self.batches.get(batch_id)
            assert found is not None
            if found.status.final:
                return found.status
        raise AssertionError(f"batch {batch_id} did not end in {rounds} rounds")

    async def read(self, file_id: str | None) -> list[dict[str, Any]]:
        assert file_id is not None
        data = b"".join([c async for c in self.files.content(file_id)])
        return [orjson.loads(line) for line in data.splitlines()]

    async def count(self, table: str, where: str = "", *args: Any) -> int:
        row = await self.db.fetchrow(f"SELECT count(*) AS n FROM {table} {where}", *args)
        assert row is not None
        return int(row["n"])


# -- files ----------------------------------------------------------------------------------


async def test_a_file_round_trips_across_chunks_split_inside_characters(db: Database) -> None:
    rig = Rig(db)
    # 2.4 MiB: three stored chunks; the odd-sized pieces split the multibyte characters
    data = ("é€😀 line\n" * 170_000).encode() + b"end"
    file = await rig.files.create(KEY, "batch", "big.jsonl", pieces(data, 7 * 1024 + 3), 10**8)
    assert file.bytes == len(data)
    assert file.chunks == 3
    assert file.public() == {
        "id": file.id,
        "object": "file",
        "bytes": len(data),
        "created_at": int(T0),
        "filename": "big.jsonl",
        "purpose": "batch",
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }
    assert b"".join([c async for c in rig.files.content(file.id)]) == data
    lines = [text async for _, text in rig.files.lines(file.id)]
    assert None not in lines
    assert "\n".join(t or "" for t in lines) == data.decode()
    numbers = [n async for n, _ in rig.files.lines(file.id, start=123_456)]
    assert numbers[0] == 123_457
    assert numbers[-1] == len(lines)


async def test_lines_crlf_bom_last_line_and_long_lines(db: Database) -> None:
    rig = Rig(db)
    file_id = await rig.upload("\ufeffone\r\n\r\n".encode() + b"x" * 50 + b"\nlast")
    assert [x async for x in rig.files.lines(file_id)] == [
        (1, "one"),
        (2, ""),
        (3, "x" * 50),
        (4, "last"),
    ]
    assert [x async for x in rig.files.lines(file_id, max_chars=10)] == [
        (1, "one"),
        (2, ""),
        (3, None),
        (4, "last"),
    ]
    assert [x async for x in rig.files.lines(file_id, start=2)] == [(3, "x" * 50), (4, "last")]
    empty = await rig.upload(b"")
    assert [x async for x in rig.files.lines(empty)] == []
    assert b"".join([c async for c in rig.files.content(empty)]) == b""


async def test_get_list_delete_are_scoped_by_key(db: Database) -> None:
    rig = Rig(db)
    ids = []
    for _ in range(3):
        ids.append(await rig.upload(b"{}\n"))
        rig.clock.tick()
    other = await rig.upload(b"{}\n", key_id="key_b")
    assert await rig.files.get(other, KEY) is None
    assert (await rig.files.get(other)) is not None
    assert [f.id for f in await rig.files.list(KEY)] == ids[::-1]
    assert [f.id for f in await rig.files.list(KEY, order="asc", limit=2)] == ids[:2]
    assert [f.id for f in await rig.files.list(KEY, after=ids[2], limit=1)] == [ids[1]]
    assert [f.id for f in await rig.files.list(KEY, purpose="batch_output")] == []
    assert len(await rig.files.list()) == 4
    assert not await rig.files.delete(other, KEY)
    assert await rig.files.delete(ids[0], KEY)
    assert await rig.files.get(ids[0]) is None
    assert await rig.count("noa_file_chunks", "WHERE file_id = $1", ids[0]) == 0


@pytest.mark.parametrize(
    ("data", "error", "code"),
    [
        (b"x" * 5000, PayloadTooLargeError, "file_too_large"),
        (b'{"a": 1}\n\xff\xfe\n', InvalidRequestError, "invalid_file"),
        (b'{"a": 1}\n\x00\n', InvalidRequestError, "invalid_file"),
        ("ok €".encode()[:-1], InvalidRequestError, "invalid_file"),  # cut inside a character
    ],
)
async def test_a_refused_upload_leaves_nothing(
    db: Database, data: bytes, error: type[Exception], code: str
) -> None:
    rig = Rig(db)
    with pytest.raises(error) as raised:
        await rig.files.create(KEY, "batch", "f.jsonl", pieces(data, 1000), 4096)
    assert getattr(raised.value, "code", None) == code
    assert await rig.count("noa_files") == 0
    assert await rig.count("noa_file_chunks") == 0


async def test_bad_purpose_and_filename_are_400s(db: Database) -> None:
    rig = Rig(db)
    for purpose, name in (("fine-tune", "f.jsonl"), ("batch_output", "f"), ("batch", "")):
        with pytest.raises(InvalidRequestError):
            await rig.files.create(KEY, purpose, name, pieces(b"{}"), 100)
    assert await rig.count("noa_files") == 0


async def test_an_upload_cut_short_is_invisible_then_cleaned_up(db: Database) -> None:
    rig = Rig(db)

    async def dies() -> AsyncIterator[bytes]:
        yield b"x" * (1024 * 1024 + 10)  # one chunk written
        raise KeyboardInterrupt  # the process dies: no clean-up runs in a real crash

    await db.execute(
        "INSERT INTO noa_files (id, key_id, purpose, filename, bytes, chunks, status,"
        " created_at, updated_at) VALUES ('file-stale', $1, 'batch', 'f', 3, 1, 'uploading',"
        " $2, $2)",
        KEY,
        T0,
    )
    await db.execute(
        "INSERT INTO noa_file_chunks (file_id, seq, data) VALUES ('file-stale', 0, 'abc')"
    )
    with pytest.raises(KeyboardInterrupt):
        await rig.files.create(KEY, "batch", "f.jsonl", dies(), 10**8)
    assert await rig.count("noa_files") == 1  # the stale one only: the cut upload removed itself
    assert await rig.files.get("file-stale") is None
    assert await rig.files.list() == []
    assert await rig.files.cleanup(older_than_s=3600) == 0
    rig.clock.tick(3601)
    assert await rig.files.cleanup(older_than_s=3600) == 1
    assert await rig.count("noa_files") == 0
    assert await rig.count("noa_file_chunks") == 0


# what the store and its drivers hold (allocated in a frame of theirs): other threads and tasks
# of the shared test process allocate too, and would count in a process-wide peak
HELD_BY_THE_STORE = [
    tracemalloc.Filter(True, pattern, all_frames=True)
    for pattern in ("*/noa/*", "*/asyncpg/*", "*/aiosqlite/*", "*/sqlite3/*", __file__)
]


def held(limit: int) -> int:
    """Memory allocated since tracing began and still held; over ``limit``, only what the store
    and its drivers hold (a snapshot: slow, so taken only then), which must be under it."""
    current, _ = tracemalloc.get_traced_memory()
    if current < limit:
        return current
    snapshot = tracemalloc.take_snapshot().filter_traces(HELD_BY_THE_STORE)
    by_store = sum(stat.size for stat in snapshot.statistics("filename"))
    assert by_store < limit, f"the store holds {by_store} bytes"  # at once: snapshots are slow
    return by_store


async def test_a_32_mb_file_keeps_memory_flat(db: Database) -> None:
    rig = Rig(db)
    size = 32 * 1024 * 1024
    # a few 1 MiB chunks at a time (the pieces, the chunk, its copy for the driver, the
    # driver's buffer: 2-5 MiB seen), never the file
    limit = 8 * CHUNK_BYTES
    line = request("r", "y" * 900).encode() + b"\n"
    upload: list[int] = []

    async def generated() -> AsyncIterator[bytes]:
        sent = 0
        while sent < size:
            piece = line * 64
            sent += len(piece)
            if len(upload) < sent // (512 * 1024):  # every half MiB: what is held by now
                upload.append(held(limit))
            yield piece

    tracemalloc.start(32)
    try:
        file = await rig.files.create(KEY, "batch", "big.jsonl", generated(), 10**9)
        upload.append(held(limit))
        reading: list[int] = []
        read = 0
        async for chunk in rig.files.content(file.id):
            read += len(chunk)
            reading.append(held(limit))
        count = 0
        async for _, _text in rig.files.lines(file.id):
            count += 1
            if count % 512 == 0:
                reading.append(held(limit))
    finally:
        tracemalloc.stop()
    assert file.bytes >= size and read == file.bytes
    assert count == file.bytes // len(line)
    assert len(upload) > 30 and len(reading) > 30
    assert max(upload) < limit, upload
    assert max(reading) < limit, reading


# -- batches --------------------------------------------------------------------------------


async def test_a_batch_runs_to_completed_with_output_and_error_files(db: Database) -> None:
    rig = Rig(db, group_size=2)
    lines = [
        request("a", "one"),
        "",
        "not json",
        request("b", "bad"),
        request("a", "dup"),
        request("c", "three", url="/v1/embeddings"),
        request("d", "four"),
    ]
    batch_id = await rig.batch(jsonl(lines), metadata={"run": "1"})
    created = await rig.batches.get(batch_id)
    assert created is not None and created.status == BatchStatus.VALIDATING
    assert await rig.settle(batch_id) == BatchStatus.COMPLETED
    done = await rig.batches.get(batch_id)
    assert done is not None
    public = done.public()
    assert public["request_counts"] == {"total": 6, "completed": 2, "failed": 4}
    assert public["metadata"] == {"run": "1"}
    assert all(
        isinstance(public[t], int)
        for t in ("created_at", "in_progress_at", "finalizing_at", "completed_at")
    )
    assert public["failed_at"] is None and public["errors"] is None
    out = await rig.read(done.output_file_id)
    assert [(r["custom_id"], r["response"]["body"]["echo"]) for r in out] == [
        ("a", "one"),
        ("d", "four"),
    ]
    assert all(r["response"]["status_code"] == 200 and r["error"] is None for r in out)
    assert all(r["id"].startswith("batch_req_") for r in out)
    job = await rig.jobs.get(out[0]["response"]["request_id"])
    assert job is not None
    assert job.priority == Priority.LOW and job.parent_id == batch_id and job.key_id == KEY
    assert job.metadata == {"custom_id": "a", "line": 1}
    errors = await rig.read(done.error_file_id)
    assert [(e["custom_id"], e["error"] and e["error"]["code"]) for e in errors] == [
        (None, "invalid_json_line"),
        ("b", None),
        ("a", "duplicate_custom_id"),
        ("c", "invalid_url"),
    ]
    refused = errors[1]["response"]
    assert refused["status_code"] == 400
    assert refused["body"]["error"]["code"] == "refused"
    output_file = await rig.files.get(done.output_file_id or "", KEY)
    assert output_file is not None and output_file.purpose == "batch_output"
    assert await rig.batches.advance("advancer") == 0  # nothing left to do


async def test_an_all_valid_batch_has_no_error_file(db: Database) -> None:
    rig = Rig(db)
    batch_id = await rig.batch(jsonl([request(f"r{i}", str(i)) for i in range(5)]))
    assert await rig.settle(batch_id) == BatchStatus.COMPLETED
    done = await rig.batches.get(batch_id)
    assert done is not None and done.error_file_id is None
    assert len(await rig.read(done.output_file_id)) == 5


@pytest.mark.parametrize(
    ("data", "code"),
    [(b"not jsonl at all\n{}\n", "invalid_json_line"), (b"\n\n", "empty_file")],
)
async def test_a_file_without_a_valid_line_fails_the_batch(
    db: Database, data: bytes, code: str
) -> None:
    rig = Rig(db)
    batch_id = await rig.batch(data, callback_url="https://hooks.example/batch")
    assert await rig.settle(batch_id) == BatchStatus.FAILED
    failed = await rig.batches.get(batch_id)
    assert failed is not None
    assert failed.errors is not None and failed.errors["object"] == "list"
    assert failed.errors["data"][0]["code"] == code
    assert failed.public()["failed_at"] == int(T0)
    assert failed.output_file_id is None and failed.error_file_id is None
    row = await db.fetchrow(
        "SELECT event_type FROM noa_webhook_deliveries WHERE subject_id = $1", batch_id
    )
    assert row is not None and row["event_type"] == "batch.failed"


class Killed(BaseException):
    """The advancing process dies (no handler catches it)."""


async def test_a_killed_advance_resumes_without_duplicates(db: Database) -> None:
    rig = Rig(db, group_size=3)
    lines = [request(f"r{i}", str(i)) for i in range(20)] + [request("r0", "again")]
    batch_id = await rig.batch(jsonl(lines))
    real, calls = rig.jobs.submit_many, 0

    async def dying(specs: list[JobSpec], tx: Database | None = None) -> list[Job]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise Killed
        return await real(specs, tx)

    rig.jobs.submit_many = dying  # type: ignore[method-assign]
    with pytest.raises(Killed):
        await rig.batches.advance("first", 60.0)
    half = await rig.batches.get(batch_id)
    assert half is not None and half.status == BatchStatus.VALIDATING
    assert half.lines_read == 6
    assert await rig.count("noa_jobs", "WHERE parent_id = $1", batch_id) == 6
    assert await rig.batches.advance("second", 60.0) == 0  # still leased by the dead one
    rig.clock.tick(61)
    assert await rig.settle(batch_id) == BatchStatus.COMPLETED
    assert await rig.count("noa_jobs", "WHERE parent_id = $1", batch_id) == 20
    done = await rig.batches.get(batch_id)
    assert done is not None
    assert [r["custom_id"] for r in await rig.read(done.output_file_id)] == [
        f"r{i}" for i in range(20)
    ]
    assert [e["error"]["code"] for e in await rig.read(done.error_file_id)] == [
        "duplicate_custom_id"
    ]


async def test_cancel_stops_queued_jobs_and_keeps_what_finished(db: Database) -> None:
    rig = Rig(db)
    ended: list[Job] = []
    rig.jobs.on_final = ended.append  # every job made final is heard of once
    batch_id = await rig.batch(jsonl([request(f"r{i}", str(i)) for i in range(4)]))
    await rig.batches.advance("advancer")
    claims = await rig.jobs.claim("runner", 30.0, limit=2)
    await rig.jobs.complete(claims[0].job.id, claims[0].token, {"done": 1})
    cancelling = await rig.batches.cancel(batch_id, KEY)
    assert cancelling is not None and cancelling.status == BatchStatus.CANCELLING
    assert (await rig.batches.cancel(batch_id, KEY)) == cancelling  # again: the same
    assert (
        await rig.count("noa_jobs", "WHERE parent_id = $1 AND status = 'cancelled'", batch_id) == 2
    )
    assert await rig.batches.advance("advancer") == 0  # one job still runs
    await rig.jobs.fail(
        claims[1].job.id, claims[1].token, {"type": "server_error", "message": "x", "code": None}
    )
    assert await rig.batches.advance("advancer") == 1
    done = await rig.batches.get(batch_id)
    assert done is not None and done.status == BatchStatus.CANCELLED
    assert done.public()["cancelling_at"] == done.public()["cancelled_at"] == int(T0)
    assert done.public()["request_counts"] == {"total": 4, "completed": 1, "failed": 3}
    assert sorted(j.status.value for j in ended) == [
        "cancelled",
        "cancelled",
        "completed",
        "failed",
    ]
    assert len({j.id for j in ended}) == 4
    assert len(await rig.read(done.output_file_id)) == 1
    errors = await rig.read(done.error_file_id)
    failed_id = claims[1].job.metadata["custom_id"]
    assert [e["custom_id"] for e in errors] == sorted(e["custom_id"] for e in errors)
    assert {
        e["custom_id"]: (
            e["response"] and e["response"]["status_code"],
            e["error"] and e["error"]["code"],
        )
        for e in errors
    } == {
        f"r{i}": (500, None) if f"r{i}" == failed_id else (None, "batch_cancelled")
        for i in range(4)
        if f"r{i}" != claims[0].job.metadata["custom_id"]
    }
    with pytest.raises(ConflictError):
        await rig.batches.cancel(batch_id)
    assert await rig.batches.cancel("batch_missing") is None


async def test_a_batch_past_its_window_expires_with_partial_output(db: Database) -> None:
    rig = Rig(db)
    batch_id = await rig.batch(
        jsonl([request(f"r{i}", str(i)) for i in range(3)]), callback_url="https://h.example/"
    )
    await rig.batches.advance("advancer")
    claims = await rig.jobs.claim("runner", 30.0, limit=2)
    await rig.jobs.complete(claims[0].job.id, claims[0].token, {"done": 1})
    rig.clock.tick(24 * 3600)
    assert await rig.batches.advance("advancer") == 1
    done = await rig.batches.get(batch_id)
    assert done is not None and done.status == BatchStatus.EXPIRED
    assert done.public()["expired_at"] == int(T0) + 24 * 3600
    assert done.public()["expires_at"] == int(T0) + 24 * 3600
    assert (
        await rig.count("noa_jobs", "WHERE parent_id = $1 AND status = 'cancelled'", batch_id) == 2
    )
    assert not await rig.jobs.complete(claims[1].job.id, claims[1].token, {"late": 1})
    assert len(await rig.read(done.output_file_id)) == 1
    assert {e["error"]["code"] for e in await rig.read(done.error_file_id)} == {"batch_expired"}
    row = await db.fetchrow(
        "SELECT event_type, payload FROM noa_webhook_deliveries WHERE subject_id = $1", batch_id
    )
    assert row is not None and row["event_type"] == "batch.expired"
    assert orjson.loads(row["payload"])["data"]["status"] == "expired"


async def test_two_advancers_never_hold_one_batch(db: Database, other: Database) -> None:
    rig = Rig(db)
    second = BatchStore(other, JobStore(other, rig.clock), FileStore(other, rig.clock), rig.clock)
    batch_id = await rig.batch(jsonl([request("r", "x")]))
    rows = await db.fetch(
        "UPDATE noa_batches SET lease_owner = 'someone', lease_expires_at = $1 WHERE id = $2"
        " RETURNING id",
        T0 + 30,
        batch_id,
    )
    assert rows
    assert await second.advance("b") == 0 and await rig.batches.advance("a") == 0
    rig.clock.tick(31)
    assert await second.advance("b") == 1  # validated into in_progress
    found = await rig.batches.get(batch_id)
    assert found is not None and found.status == BatchStatus.IN_PROGRESS
    assert found.lease_owner is None
    assert found.public()["request_counts"] == {"total": 1, "completed": 0, "failed": 0}


async def test_create_checks_its_fields(db: Database) -> None:
    rig = Rig(db)
    file_id = await rig.upload(jsonl([request("r", "x")]))
    other = await rig.upload(jsonl([request("r", "x")]), key_id="key_b")
    base: dict[str, Any] = {
        "key_id": KEY,
        "team": None,
        "input_file_id": file_id,
        "endpoint": CHAT,
        "scope": KEY,
    }
    bad: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"endpoint": "/v1/images"}, InvalidRequestError, "endpoint"),
        ({"completion_window": "1h"}, InvalidRequestError, "completion_window"),
        ({"metadata": {str(i): "v" for i in range(17)}}, InvalidRequestError, "metadata"),
        ({"metadata": {"k": 1}}, InvalidRequestError, "metadata"),
        ({"input_file_id": other}, NotFoundError, "input_file_id"),
        ({"input_file_id": "file-none"}, NotFoundError, "input_file_id"),
    ]
    for change, error, param in bad:
        with pytest.raises(error) as raised:
            await rig.batches.create(**(base | change))
        assert getattr(raised.value, "param", None) == param
    made = await rig.batches.create(**(base | {"input_file_id": other, "scope": None}))
    assert made.status == BatchStatus.VALIDATING and made.key_id == KEY
    rig.clock.tick()
    mine = await rig.batches.create(**base)
    assert [b.id for b in await rig.batches.list(KEY)] == [mine.id, made.id]
    assert [b.id for b in await rig.batches.list(KEY, after=mine.id)] == [made.id]
    assert await rig.batches.get(mine.id, "key_b") is None
    assert set(mine.public()) == {
        "id",
        "object",
        "endpoint",
        "errors",
        "input_file_id",
        "completion_window",
        "status",
        "output_file_id",
        "error_file_id",
        "created_at",
        "in_progress_at",
        "expires_at",
        "finalizing_at",
        "completed_at",
        "failed_at",
        "expired_at",
        "cancelling_at",
        "cancelled_at",
        "request_counts",
        "metadata",
    }


async def test_submit_many_is_idempotent(db: Database) -> None:
    clock = Clock()
    jobs = JobStore(db, clock)
    body = {"model": "gpt", "messages": [{"role": "user", "content": "x"}]}
    specs = [
        JobSpec(endpoint=CHAT, body=body, idempotency_key=f"k{i}", key_id=KEY) for i in range(900)
    ]
    stored = await jobs.submit_many(specs[:450])
    assert len(stored) == 450
    again = await jobs.submit_many(specs)
    assert {j.idempotency_key for j in again} == {f"k{i}" for i in range(450, 900)}
    assert await jobs.submit_many([]) == []
    assert (await jobs.depth())[JobStatus.QUEUED.value] == 900
