"""Usage records on both databases: batched writes, nothing lost on close or on a failed write,
and the summaries behind /v1/usage and the admin API."""

from __future__ import annotations

from pathlib import Path

import pytest

from noa.storage.db import Database, connect
from noa.storage.migrations import migrate
from noa.storage.usage import UsageQueries, UsageRecord, UsageRecorder

DAY = 86_400.0
T0 = 1_763_856_000.0  # 2025-11-23 00:00:00 UTC


def record(**fields: object) -> UsageRecord:
    base: dict[str, object] = {
        "operation": "chat",
        "status": 200,
        "key_id": "key_a",
        "team": "red",
        "model": "gpt",
        "provider": "openai",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost_usd": 0.001,
        "created_at": T0 + 60,
    }
    return UsageRecord(**(base | fields))  # type: ignore[arg-type]


async def no_sleep(_: float) -> None:
    return None


async def test_batches_are_written_and_summarised(db: Database) -> None:
    recorder = UsageRecorder(db, batch_size=3, sleep=no_sleep)
    recorder.record(record())
    recorder.record(record(model="claude", provider="anthropic", cost_usd=0.01))
    recorder.record(record(key_id="key_b", team="blue", status=502, cost_usd=0.0))
    recorder.record(record(created_at=T0 + DAY + 5, cache="hit-l1", cost_usd=0.0))
    assert recorder.pending == 4
    await recorder.aclose()
    assert (recorder.pending, recorder.written) == (0, 4)

    queries = UsageQueries(db)
    by_key = await queries.summary("key")
    assert [(r["key"], r["requests"], r["errors"]) for r in by_key] == [
        ("key_a", 3, 0),
        ("key_b", 1, 1),
    ]
    assert by_key[0]["cost_usd"] == pytest.approx(0.011)
    assert by_key[0]["cache_hits"] == 1
    by_day = await queries.summary("day")
    assert [(r["day"], r["requests"]) for r in by_day] == [("2025-11-23", 3), ("2025-11-24", 1)]
    by_model = await queries.summary("model", key_id="key_a", start=T0, end=T0 + DAY)
    assert [(r["model"], r["requests"]) for r in by_model] == [("claude", 1), ("gpt", 1)]
    assert await queries.spent(since=T0, key_id="key_a") == pytest.approx(0.011)
    assert await queries.spent(since=T0 + DAY, team="red") == 0.0
    own = await queries.records(key_id="key_b")
    assert len(own) == 1 and own[0]["status"] == 502


async def test_a_failed_write_keeps_the_records_for_the_next(tmp_path: Path) -> None:
    db = await connect(f"sqlite:///{tmp_path}/u.db")  # not migrated yet: the insert fails
    recorder = UsageRecorder(db, sleep=no_sleep)
    recorder.record(record())
    assert await recorder.flush() is False
    assert (recorder.pending, recorder.failures) == (1, 1)
    await migrate(db)
    await recorder.aclose()
    assert recorder.written == 1
    assert len(await UsageQueries(db).records()) == 1
    await db.close()


async def test_the_background_task_writes_without_being_asked(db: Database) -> None:
    recorder = UsageRecorder(db, batch_size=2, flush_interval_s=30).start()
    recorder.record(record())
    recorder.record(record())  # a full batch wakes the writer
    for _ in range(200):
        if recorder.written == 2:
            break
        await db.fetch("SELECT 1")  # yields to the writer; nothing sleeps on a clock
    assert recorder.written == 2
    await recorder.aclose()


async def test_the_buffer_is_bounded(tmp_path: Path) -> None:
    db = await connect(f"sqlite:///{tmp_path}/u.db")
    recorder = UsageRecorder(db, max_buffer=3, sleep=no_sleep)
    for i in range(5):
        recorder.record(record(correlation_id=str(i)))
    assert (recorder.pending, recorder.dropped) == (3, 2)
    await migrate(db)
    await recorder.aclose()
    ids = sorted(r["correlation_id"] for r in await UsageQueries(db).records())
    assert ids == ["2", "3", "4"]  # the oldest went
    await db.close()
