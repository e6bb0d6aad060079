"""Recurring jobs: a cron expression in a time zone, each due time fired as one job.

``fire_due(now)`` (every runner replica calls it on its tick) submits, for each enabled schedule
whose ``next_due_at`` has come, the job for that due time, then advances ``next_due_at`` with
``UPDATE ... WHERE next_due_at = <the value read>``. The job is submitted first: a replica that
dies between the two leaves the due time due, and whoever fires it again gets the same job back,
since ``noa_jobs`` holds one job per ``(schedule_id, due_at)``. So each due time runs exactly
once however many replicas race, and none is lost.

Due times NOA missed while it was down (or a tick came late) fire once, as the latest of them:
a schedule "every hour" down for a day runs once on return, not 24 times (cron's own rule, and
what a catch-up storm on a recovering upstream would make worse).

Time zones: due times are computed by ``croniter`` from a zone-aware start (``zoneinfo``), so
"0 9 * * *" in Europe/Paris is 09:00 local on both sides of a DST change (08:00 or 07:00 UTC).
A wall time a spring-forward change skips fires at the change (croniter: "30 2 * * *" fires at
03:00 that day). A wall time a fall-back change repeats fires once for a fixed-hour expression
(the hour field is not ``*``...: the second pass through the hour is skipped, as Vixie cron
does), and on both passes for an hourly or finer one, which counts real time.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from noa.errors import InvalidRequestError
from noa.jobs.model import MASTER_KEY_ID, JobSpec, Priority, dumps, loads
from noa.jobs.store import Clock, JobStore
from noa.storage.db import Database, Row

logger = logging.getLogger("noa.jobs.schedules")

COLUMNS = (
    "id",
    "key_id",
    "name",
    "cron",
    "timezone",
    "endpoint",
    "body",
    "priority",
    "callback_url",
    "metadata",
    "max_attempts",
    "enabled",
    "next_due_at",
    "created_at",
    "updated_at",
)
COLS = ", ".join(COLUMNS)
INSERT = (
    f"INSERT INTO noa_job_schedules ({COLS})"
    f" VALUES ({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))})"
)
UPDATE = (
    "UPDATE noa_job_schedules SET "
    + ", ".join(f"{c} = ${i}" for i, c in enumerate(COLUMNS[1:], 2))
    + " WHERE id = $1"
)
BY_ID = f"SELECT {COLS} FROM noa_job_schedules WHERE id = $1"
# the due schedules after the cursor ($2, $3: the last fired page's (next_due_at, id))
DUE = f"""
SELECT {COLS} FROM noa_job_schedules
WHERE enabled = 1 AND next_due_at <= $1 AND (next_due_at, id) > ($2, $3)
ORDER BY next_due_at, id LIMIT $4
"""
ADVANCE = (
    "UPDATE noa_job_schedules SET next_due_at = $1, updated_at = $2"
    " WHERE id = $3 AND next_due_at = $4"
)
PAGE = 200
SPECIALS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight"})


def _bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code="invalid_schedule")


def zone(timezone: str) -> ZoneInfo:
    """The time zone named (IANA: ``Europe/Paris``, ``UTC``); a 400 when there is none."""
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        raise _bad(f"unknown time zone: {timezone!r}", "timezone") from None


def check_cron(cron: str) -> None:
    """A 400 unless ``cron`` is a five-field expression (minute hour day month weekday) or one
    of ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly`` (no seconds: one job a
    minute at most)."""
    if not isinstance(cron, str) or not (
        cron.strip() in SPECIALS | {"@hourly"} or len(cron.split()) == 5
    ):
        raise _bad(f"cron must have five fields or be @hourly, @daily, ...: {cron!r}", "cron")
    if not croniter.is_valid(cron):
        raise _bad(f"invalid cron expression: {cron!r}", "cron")


def _fixed_hour(cron: str) -> bool:
    cron = cron.strip()
    return cron in SPECIALS or (not cron.startswith("@") and not cron.split()[1].startswith("*"))


def _skipped(when: datetime, fixed_hour: bool) -> bool:
    """A fixed-hour schedule's second pass through a wall time that a fall-back repeats."""
    if not fixed_hour:
        return False
    first = when.replace(tzinfo=None).replace(tzinfo=when.tzinfo, fold=0)
    return first.timestamp() < when.timestamp()


def next_due_after(cron: str, timezone: str, after: float) -> float:
    """The first due time strictly after ``after`` (epoch seconds)."""
    fixed, it = _fixed_hour(cron), croniter(cron, datetime.fromtimestamp(after, zone(timezone)))
    while _skipped(when := it.get_next(datetime), fixed):
        pass
    return float(when.timestamp())


def latest_due(cron: str, timezone: str, now: float) -> float:
    """The last due time at or before ``now``."""
    fixed, it = _fixed_hour(cron), croniter(cron, datetime.fromtimestamp(now, zone(timezone)))
    while _skipped(before := it.get_prev(datetime), fixed):
        pass
    following = next_due_after(cron, timezone, before.timestamp())
    return following if following <= now else float(before.timestamp())


@dataclass(frozen=True)
class ScheduleSpec:
    """What a schedule makes and when: the job's fields (as a ``JobSpec`` takes them), billed
    to ``key_id``, on ``cron`` in ``timezone``. Invalid values are 400s."""

    cron: str
    endpoint: str
    body: Mapping[str, Any]
    timezone: str = "UTC"
    name: str | None = None
    key_id: str = MASTER_KEY_ID
    priority: Priority = Priority.MEDIUM
    callback_url: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    max_attempts: int = 3
    enabled: bool = True

    def __post_init__(self) -> None:
        check_cron(self.cron)
        zone(self.timezone)
        if not isinstance(self.enabled, bool):
            raise _bad("enabled must be true or false", "enabled")
        if self.name is not None and not isinstance(self.name, str):
            raise _bad("name must be a string", "name")
        try:
            object.__setattr__(self, "priority", Priority.of(self.priority))
            self.job(0.0)
        except (ValueError, TypeError) as e:
            raise InvalidRequestError(str(e), code="invalid_schedule") from None
        object.__setattr__(self, "body", dict(self.body))
        object.__setattr__(self, "metadata", dict(self.metadata))

    def job(self, due_at: float, schedule_id: str = "-") -> JobSpec:
        """The job of one due time."""
        return JobSpec(
            endpoint=self.endpoint,
            body=self.body,
            priority=self.priority,
            callback_url=self.callback_url,
            metadata=self.metadata,
            run_at=due_at,
            max_attempts=self.max_attempts,
            key_id=self.key_id,
            schedule_id=schedule_id,
            due_at=due_at,
        )


@dataclass(frozen=True)
class Schedule:
    """A stored schedule: its spec, and the next due time not yet fired."""

    id: str
    spec: ScheduleSpec
    next_due_at: float
    created_at: float
    updated_at: float

    def public(self) -> dict[str, Any]:
        """What the admin API returns."""
        s = self.spec
        return {
            "id": self.id,
            "object": "job.schedule",
            "name": s.name,
            "key_id": s.key_id,
            "cron": s.cron,
            "timezone": s.timezone,
            "endpoint": s.endpoint,
            "body": s.body,
            "priority": s.priority.label,
            "callback_url": s.callback_url,
            "metadata": s.metadata,
            "max_attempts": s.max_attempts,
            "enabled": s.enabled,
            "next_due_at": self.next_due_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class ScheduleStore:
    """Create, read, list, update and delete schedules; ``fire_due`` turns due times into
    jobs, each once."""

    def __init__(self, db: Database, clock: Clock = time.time, jobs: JobStore | None = None):
        self.db = db
        self.clock = clock
        self.jobs = jobs if jobs is not None else JobStore(db, clock)

    async def create(self, spec: ScheduleSpec) -> Schedule:
        now = self.clock()
        schedule = Schedule(f"sched_{uuid.uuid4().hex[:24]}", spec, _first_due(spec, now), now, now)
        await self.db.execute(INSERT, *_values(schedule))
        return schedule

    async def get(self, schedule_id: str, key_id: str | None = None) -> Schedule | None:
        """The schedule; with ``key_id``, only if it bills that key."""
        row = await self.db.fetchrow(BY_ID, schedule_id)
        if row is None or (key_id is not None and row["key_id"] != key_id):
            return None
        return _schedule(row)

    async def list(
        self, key_id: str | None = None, limit: int = 100, after: str | None = None
    ) -> list[Schedule]:
        """A page of schedules, oldest first, after the schedule ``after``."""
        where: list[str] = []
        args: list[Any] = []
        if key_id is not None:
            args.append(key_id)
            where.append(f"key_id = ${len(args)}")
        if after is not None:
            args.append(after)
            where.append(
                f"(created_at, id) > (SELECT created_at, id FROM noa_job_schedules"
                f" WHERE id = ${len(args)})"
            )
        sql = f"SELECT {COLS} FROM noa_job_schedules"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY created_at, id LIMIT ${len(args) + 1}"
        return [_schedule(r) for r in await self.db.fetch(sql, *args, max(0, limit))]

    async def update(
        self, schedule_id: str, key_id: str | None = None, **changes: Any
    ) -> Schedule | None:
        """Change fields of the spec (validated as on create); a new cron or time zone, or
        enabling it again, starts from the next due time after now (times missed while it was
        disabled do not fire). None when there is no such schedule."""
        current = await self.get(schedule_id, key_id)
        if current is None:
            return None
        unknown = set(changes) - {f.name for f in dataclasses.fields(ScheduleSpec)}
        if unknown:
            raise _bad(f"unknown schedule fields: {', '.join(sorted(unknown))}", sorted(unknown)[0])
        spec = dataclasses.replace(current.spec, **changes)
        now = self.clock()
        due = current.next_due_at
        old = current.spec
        if (spec.cron, spec.timezone) != (old.cron, old.timezone) or spec.enabled > old.enabled:
            due = _first_due(spec, now)
        schedule = Schedule(current.id, spec, due, current.created_at, now)
        await self.db.execute(UPDATE, *_values(schedule))
        return schedule

    async def delete(self, schedule_id: str, key_id: str | None = None) -> bool:
        """Remove the schedule (its jobs stay); False when there is no such schedule."""
        if await self.get(schedule_id, key_id) is None:
            return False
        await self.db.execute("DELETE FROM noa_job_schedules WHERE id = $1", schedule_id)
        return True

    async def fire_due(self, now: float | None = None) -> int:
        """Submit the job of every due schedule's due time (the latest, when several were
        missed) and advance it; how many jobs this call made (a due time another replica
        fired first makes none here)."""
        now = self.clock() if now is None else now
        made = 0
        cursor: tuple[float, str] = (float("-inf"), "")
        while True:
            rows = await self.db.fetch(DUE, now, *cursor, PAGE)
            for row in rows:
                made += await self._fire(row, now)
            if len(rows) < PAGE:
                return made
            cursor = (rows[-1]["next_due_at"], rows[-1]["id"])

    async def _fire(self, row: Row, now: float) -> int:
        try:
            schedule = _schedule(row)
            spec = schedule.spec
            due = max(schedule.next_due_at, latest_due(spec.cron, spec.timezone, now))
            following = next_due_after(spec.cron, spec.timezone, due)
        except Exception:  # a zone gone from tzdata, a cron that croniter no longer reads
            logger.exception("schedule %s: cannot compute its due times", row["id"])
            return 0
        _, created = await self.jobs.submit(spec.job(due, schedule.id))
        await self.db.execute(ADVANCE, following, now, schedule.id, schedule.next_due_at)
        if created:
            logger.info("schedule %s fired its due time %s", schedule.id, due)
        return int(created)


def _first_due(spec: ScheduleSpec, now: float) -> float:
    try:
        return next_due_after(spec.cron, spec.timezone, now)
    except InvalidRequestError:
        raise
    except Exception:  # croniter searched and found no date ("0 0 31 2 *")
        raise _bad(f"cron expression never fires: {spec.cron!r}", "cron") from None


def _values(schedule: Schedule) -> tuple[Any, ...]:
    s = schedule.spec
    values = {
        "id": schedule.id,
        "key_id": s.key_id,
        "name": s.name,
        "cron": s.cron,
        "timezone": s.timezone,
        "endpoint": s.endpoint,
        "body": dumps(dict(s.body)),
        "priority": int(s.priority),
        "callback_url": s.callback_url,
        "metadata": dumps(dict(s.metadata)),
        "max_attempts": s.max_attempts,
        "enabled": int(s.enabled),
        "next_due_at": schedule.next_due_at,
        "created_at": schedule.created_at,
        "updated_at": schedule.updated_at,
    }
    return tuple(values[c] for c in COLUMNS)


def _schedule(row: Row) -> Schedule:
    spec = ScheduleSpec(
        cron=row["cron"],
        endpoint=row["endpoint"],
        body=loads(row["body"]),
        timezone=row["timezone"],
        name=row["name"],
        key_id=row["key_id"],
        priority=Priority(row["priority"]),
        callback_url=row["callback_url"],
        metadata=loads(row["metadata"]) or {},
        max_attempts=row["max_attempts"],
        enabled=bool(row["enabled"]),
    )
    return Schedule(row["id"], spec, row["next_due_at"], row["created_at"], row["updated_at"])
