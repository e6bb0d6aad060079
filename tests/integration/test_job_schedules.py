"""Job schedules on both databases: validation, the admin operations, each due time fired once
however many replicas (two connections) race, cron in a time zone across DST changes, and
missed due times firing once. The clock is injected: no test sleeps."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from noa.errors import InvalidRequestError
from noa.jobs.model import JobStatus, Priority
from noa.jobs.schedules import ScheduleSpec, ScheduleStore, latest_due, next_due_after
from noa.jobs.store import JobStore
from noa.storage.db import Database

T0 = 1_763_856_000.0  # 2025-11-23 00:00 UTC
HOUR = 3600.0
CHAT = "/v1/chat/completions"
PARIS = ZoneInfo("Europe/Paris")


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


def paris(year: int, month: int, day: int, hour: int, minute: int, fold: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=PARIS, fold=fold).timestamp()


def sched(**fields: Any) -> ScheduleSpec:
    base: dict[str, Any] = {
        "cron": "0 * * * *",
        "endpoint": CHAT,
        "body": {"model": "gpt", "messages": [{"role": "user", "content": "nightly"}]},
    }
    return ScheduleSpec(**(base | fields))


async def jobs_of(db: Database, schedule_id: str) -> list[float]:
    rows = await db.fetch(
        "SELECT due_at FROM noa_jobs WHERE schedule_id = $1 ORDER BY due_at", schedule_id
    )
    return [r["due_at"] for r in rows]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * *"}, "cron"),
        ({"cron": "*/5 * * * * *"}, "cron"),  # seconds: refused
        ({"cron": ""}, "cron"),
        ({"cron": None}, "cron"),
        ({"cron": "@reboot"}, "cron"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"enabled": "yes"}, "enabled"),
        ({"endpoint": "/v1/images"}, None),
        ({"max_attempts": 0}, None),
        ({"max_attempts": "3"}, None),
        ({"priority": "urgent"}, None),
        ({"body": {"x": float("nan")}}, None),
        ({"body": ["not", "an", "object"]}, None),
    ],
)
def test_invalid_schedules_are_400s(fields: dict[str, Any], param: str | None) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        sched(**fields)
    assert caught.value.status_code == 400 and caught.value.param == param


async def test_a_cron_that_never_fires_is_refused(db: Database) -> None:
    with pytest.raises(InvalidRequestError, match="never fires"):
        await ScheduleStore(db, Clock()).create(sched(cron="0 0 31 2 *"))


async def test_create_get_list_update_delete(db: Database) -> None:
    clock = Clock(T0 + 10 * 60)  # 00:10 UTC
    store = ScheduleStore(db, clock)
    a = await store.create(sched(name="hourly", key_id="key_a", priority="high"))
    assert a.next_due_at == T0 + HOUR and a.spec.priority is Priority.HIGH
    clock.tick()
    b = await store.create(sched(cron="30 9 * * MON-FRI", timezone="Europe/Paris"))
    assert await store.get(a.id) == a
    assert await store.get(a.id, key_id="key_a") == a
    assert await store.get(a.id, key_id="key_b") is None
    assert [s.id for s in await store.list()] == [a.id, b.id]
    assert [s.id for s in await store.list(limit=1, after=a.id)] == [b.id]
    assert [s.id for s in await store.list("key_a")] == [a.id]
    public = a.public()
    assert public["object"] == "job.schedule" and public["priority"] == "high"
    assert public["cron"] == "0 * * * *" and public["timezone"] == "UTC" and public["enabled"]

    clock.tick(60)
    moved = await store.update(a.id, cron="*/15 * * * *", metadata={"v": 2})
    assert moved is not None and moved.next_due_at == T0 + 15 * 60
    assert moved.spec.metadata == {"v": 2} and moved.updated_at == clock()
    assert await store.get(a.id) == moved
    renamed = await store.update(a.id, name="quarterly")
    assert renamed is not None and renamed.next_due_at == moved.next_due_at
    with pytest.raises(InvalidRequestError):
        await store.update(a.id, cron="every day")
    with pytest.raises(InvalidRequestError):
        await store.update(a.id, colour="blue")
    assert await store.get(a.id) == renamed  # a refused update changes nothing
    assert await store.update("sched_nope", name="x") is None
    assert await store.update(a.id, key_id="key_b", name="x") is None  # not that key's

    assert await store.delete(b.id, key_id="key_b") is False
    assert await store.delete(b.id) is True
    assert await store.get(b.id) is None and await store.delete(b.id) is False


async def test_fires_each_due_time_once_with_two_replicas_racing(
    db: Database, other: Database
) -> None:
    clock = Clock()
    replicas = [ScheduleStore(db, clock), ScheduleStore(other, clock)]
    schedule = await replicas[0].create(sched(cron="*/5 * * * *"))
    made = 0
    for _ in range(30):  # 30 minutes, a minute at a time, six racing calls each
        clock.tick(60)
        made += sum(await asyncio.gather(*(replicas[i % 2].fire_due() for i in range(6))))
    due_times = [T0 + 300 * n for n in range(1, 7)]
    assert made == 6
    assert await jobs_of(db, schedule.id) == due_times
    current = await replicas[1].get(schedule.id)
    assert current is not None and current.next_due_at == T0 + 7 * 300

    jobs = await JobStore(db, clock).list(status=JobStatus.QUEUED, limit=10)
    assert len(jobs) == 6
    first = min(jobs, key=lambda j: j.due_at or 0)
    assert first.schedule_id == schedule.id and first.run_at == first.due_at == T0 + 300
    assert first.body == dict(schedule.spec.body) and first.priority is Priority.MEDIUM


async def test_a_replica_dying_between_submit_and_advance_loses_nothing(db: Database) -> None:
    clock = Clock()
    store = ScheduleStore(db, clock)
    schedule = await store.create(sched())
    clock.tick(HOUR)
    assert await store.fire_due() == 1
    # as if the advance never happened: the due time is due again; the same job comes back
    await db.execute(
        "UPDATE noa_job_schedules SET next_due_at = $1 WHERE id = $2", T0 + HOUR, schedule.id
    )
    assert await store.fire_due() == 0
    assert await jobs_of(db, schedule.id) == [T0 + HOUR]
    current = await store.get(schedule.id)
    assert current is not None and current.next_due_at == T0 + 2 * HOUR


async def test_missed_due_times_fire_once_as_the_latest(db: Database) -> None:
    clock = Clock()
    store = ScheduleStore(db, clock)
    hourly = await store.create(sched())
    clock.tick(10 * HOUR + 30 * 60)  # NOA was down from 00:00 to 10:30
    assert await store.fire_due() == 1
    assert await store.fire_due() == 0
    assert await jobs_of(db, hourly.id) == [T0 + 10 * HOUR]  # not the nine before it
    current = await store.get(hourly.id)
    assert current is not None and current.next_due_at == T0 + 11 * HOUR

    clock.tick(30 * 60)  # 11:00 exactly: due now
    assert await store.fire_due() == 1
    assert await jobs_of(db, hourly.id) == [T0 + 10 * HOUR, T0 + 11 * HOUR]


async def test_disabled_schedules_do_not_fire_and_resume_from_now(db: Database) -> None:
    clock = Clock()
    store = ScheduleStore(db, clock)
    schedule = await store.create(sched(enabled=False))
    clock.tick(3 * HOUR)
    assert await store.fire_due() == 0
    await store.update(schedule.id, enabled=True)
    assert await store.fire_due() == 0  # the hours missed while disabled do not fire
    clock.tick(HOUR)
    assert await store.fire_due() == 1
    assert await jobs_of(db, schedule.id) == [T0 + 4 * HOUR]


async def test_paris_nine_oclock_across_both_dst_changes(db: Database) -> None:
    clock = Clock(paris(2026, 3, 27, 12, 0))
    store = ScheduleStore(db, clock)
    schedule = await store.create(sched(cron="0 9 * * *", timezone="Europe/Paris"))
    fired = []
    for _ in range(3):
        current = await store.get(schedule.id)
        assert current is not None
        clock.now = current.next_due_at
        assert await store.fire_due() == 1
        fired.append(clock.now)
    # 09:00 local each day: 08:00 UTC before the change (29 March), 07:00 UTC after it
    assert fired == [paris(2026, 3, 28, 9, 0), paris(2026, 3, 29, 9, 0), paris(2026, 3, 30, 9, 0)]
    assert fired == [1774684800.0, 1774767600.0, 1774854000.0]
    assert await jobs_of(db, schedule.id) == fired

    autumn = paris(2026, 10, 24, 12, 0)  # and back: 07:00 UTC, then 08:00 UTC
    assert next_due_after("0 9 * * *", "Europe/Paris", autumn) == paris(2026, 10, 25, 9, 0)
    assert paris(2026, 10, 25, 9, 0) - paris(2026, 10, 24, 9, 0) == 25 * HOUR


def test_wall_times_a_dst_change_skips_or_repeats() -> None:
    # spring forward (02:00 -> 03:00 on 29 March 2026): 02:30 does not exist; it fires at 03:00
    spring = paris(2026, 3, 28, 12, 0)
    assert next_due_after("30 2 * * *", "Europe/Paris", spring) == paris(2026, 3, 29, 3, 0)
    # fall back (03:00 -> 02:00 on 25 October 2026): 02:30 happens twice; a daily job fires once
    first = paris(2026, 10, 25, 2, 30, fold=0)
    second = paris(2026, 10, 25, 2, 30, fold=1)
    assert second - first == HOUR
    assert next_due_after("30 2 * * *", "Europe/Paris", paris(2026, 10, 24, 12, 0)) == first
    assert next_due_after("30 2 * * *", "Europe/Paris", first) == paris(2026, 10, 26, 2, 30)
    assert latest_due("30 2 * * *", "Europe/Paris", second + 60) == first
    # while an every-30-minutes job fires on both passes (it counts real time)
    times, t = [], paris(2026, 10, 25, 1, 50)
    for _ in range(4):
        t = next_due_after("*/30 * * * *", "Europe/Paris", t)
        times.append(t)
    assert times == [first - 30 * 60, first, second - 30 * 60, second]
