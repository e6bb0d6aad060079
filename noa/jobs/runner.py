"""The job runner: claims due jobs, runs each through ``execute`` under bounded concurrency, and
ends every claim in the store (fenced by its token).

Outcomes (``judge``): a result is ``complete``\\ d; a client error (400, 401, 403, 404, 405, 413,
422: the request itself is wrong) ``fail``\\ s at once; anything else (5xx, timeouts, 429s, an
unexpected exception: a generic message, the details logged) is ``retry``\\ d after
``backoff_s(attempt)`` while attempts remain, else ``bury``\\ d (dead). A 429 is back-pressure:
its ``retry_after`` is the least delay (its attempt counts like any retry's), and the jobs of
what it limited are held back until then: the model for an upstream's 429, the key for its own
limit or budget (``RateLimitError``). A claimed job held back for longer than a lease is handed
back (``store.release``: queued until then, the attempt not counted) rather than sit in a slot.

Concurrency: at most ``concurrency`` claims held, at most ``per_model`` running on one model
(``body["model"]``) and ``per_key`` for one key. Claims come in strict priority order (then
``run_at``, then age) and are never overtaken: a job whose model or key is at its limit (or
briefly held back) waits for its turn holding its lease, so a runner's slots can all wait on one
busy model (run several runners, or raise ``per_model``, for a mixed queue).

Leases: every ``lease_s / 3`` (on the event loop's own timer: a lease measures how long the work
really takes) each held lease is extended; one the store refuses (the job was cancelled, or its
lease lost to another runner) cancels that job's task, and nothing is written for it. Tests call
``heartbeat()``; the injected ``sleep`` waits out idle time and 429s, ``clock`` dates claims.
Only picklable data crosses ``execute`` (a ``Job`` in, a ``dict`` out): in Serve it is a Ray
task or a Router handle call.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from noa.errors import ClientDisconnectedError, NoaError, RateLimitError, UpstreamRateLimitError
from noa.jobs.backoff import backoff_s
from noa.jobs.model import Claim, Job, error_body
from noa.jobs.store import JobStore

logger = logging.getLogger("noa.jobs.runner")

Execute = Callable[[Job], Awaitable[dict[str, Any]]]
Hook = Callable[[Job], Awaitable[None]]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
UNEXPECTED = "the job failed with an internal error"
MIN_IDLE_S = 0.01  # never spin: another runner may hold due rows in its claim transaction


@dataclass(frozen=True)
class Verdict:
    """A failed run's end: ``fail`` or ``retry``, its error, for a 429 its delay and hold."""

    action: Literal["fail", "retry"]
    error: dict[str, Any]
    retry_after: float | None = None
    hold: Literal["model", "key"] | None = None


def judge(exc: BaseException) -> Verdict:
    """The verdict on an exception ``execute`` raised."""
    if not isinstance(exc, NoaError):
        return Verdict("retry", error_body(UNEXPECTED))
    error = exc.to_dict()["error"]
    if isinstance(exc, UpstreamRateLimitError):
        return Verdict("retry", error, exc.retry_after, "model")
    if isinstance(exc, RateLimitError) or exc.status_code == 429:
        return Verdict("retry", error, exc.retry_after, "key")
    if exc.category == "client" and not isinstance(exc, ClientDisconnectedError):
        return Verdict("fail", error)
    return Verdict("retry", error, exc.retry_after)


def model_of(job: Job) -> str:
    model = job.body.get("model")
    return model if isinstance(model, str) else ""


@dataclass
class _Held:
    """One claim this runner holds: its task, and whether the store took it back."""

    claim: Claim
    task: asyncio.Task[bool] | None = None
    lost: bool = False
    settling: bool = False  # its last write has begun: a refused heartbeat no longer cancels


class JobRunner:
    """Claims due jobs and runs them through ``execute``; see the module docstring."""

    def __init__(
        self,
        store: JobStore,
        execute: Execute,
        *,
        owner: str,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        lease_s: float = 30.0,
        concurrency: int = 16,
        per_model: int | None = None,
        per_key: int | None = None,
        base_backoff_s: float = 1.0,
        cap_backoff_s: float = 300.0,
        poll_s: float = 1.0,
        on_finished: Hook | None = None,
    ) -> None:
        if lease_s <= 0 or poll_s <= 0:
            raise ValueError("lease_s and poll_s must be positive")
        if any(v is not None and v < 1 for v in (concurrency, per_model, per_key)):
            raise ValueError("concurrency, per_model and per_key must be at least 1")
        self.store = store
        self.execute = execute
        self.owner = owner
        self.clock = clock
        self.sleep = sleep
        self.rng = rng if rng is not None else random.Random()
        self.lease_s = lease_s
        self.concurrency = concurrency
        self.base_backoff_s = base_backoff_s
        self.cap_backoff_s = cap_backoff_s
        self.poll_s = poll_s
        self.on_finished = on_finished
        self._tasks: set[asyncio.Task[bool]] = set()
        self._held: dict[str, _Held] = {}
        self._limits = {"model": per_model, "key": per_key}
        self._busy: dict[tuple[str, str], int] = {}  # ("model" | "key", name): jobs running
        self._holds: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}  # 429: until, why
        self._turns = asyncio.Condition()
        self._wake = asyncio.Event()
        self._active = False

    # -- driving -------------------------------------------------------------------------------

    async def run_burst(self) -> int:
        """Claim and run everything due now until nothing is due and nothing runs; how many
        jobs finished here (completed, failed or dead: retried ones are not counted)."""
        beat, finished = self._begin(), 0
        try:
            while True:
                await self._claim()
                if not self._tasks:
                    return finished
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                finished += self._reap()
        finally:
            await self._end(beat)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set: claim up to free capacity, and when the queue is drained
        sleep until ``store.next_due()`` (at most ``poll_s``; ``notify()`` wakes it sooner).
        Once stopped, claims nothing more and lets the jobs it holds finish."""
        beat = self._begin()
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                delay: float | None = None
                free = self.concurrency - len(self._tasks)
                if free > 0:
                    try:
                        claimed = await self._claim()
                    except Exception:  # the database is away: try again after a poll
                        logger.warning("claiming jobs failed", exc_info=True)
                        claimed = 0
                    if claimed == free:
                        continue  # full: wait below for a slot
                    delay = await self._idle_delay()
                await self._wait(stopping, delay)
                self._reap()
            while self._tasks:
                await asyncio.wait(self._tasks)
                self._reap()
        finally:
            stopping.cancel()
            await self._end(beat)

    def notify(self) -> None:
        """Wake an idle ``run`` now (a job was submitted in this process)."""
        self._wake.set()

    def _begin(self) -> asyncio.Task[None]:
        if self._active:
            raise RuntimeError("this runner is running already")
        self._active = True
        return asyncio.create_task(self._beat_forever())

    async def _end(self, beat: asyncio.Task[None]) -> None:
        """Stop heartbeating; cancel what still runs (only when leaving on an error or a
        cancellation: those jobs' leases expire and they run again elsewhere)."""
        beat.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(beat, *self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._active = False

    async def _claim(self) -> int:
        free = self.concurrency - len(self._tasks)
        if free <= 0:
            return 0
        claims = await self.store.claim(self.owner, self.lease_s, free, now=self.clock())
        for claim in claims:  # in claim order, so that turns are taken in that order
            held = _Held(claim)
            self._held[claim.job.id] = held
            held.task = asyncio.create_task(self._run_one(held), name=f"job {claim.job.id}")
            self._tasks.add(held.task)
        return len(claims)

    def _reap(self) -> int:
        """Drop finished tasks; how many ended their job for good."""
        finished = 0
        for task in [t for t in self._tasks if t.done()]:
            self._tasks.discard(task)
            if task.cancelled():
                pass
            elif (exc := task.exception()) is not None:
                logger.error("a job task failed", exc_info=exc)
            elif task.result():
                finished += 1
        return finished

    async def _idle_delay(self) -> float:
        try:
            due = await self.store.next_due()
        except Exception:
            logger.warning("reading the next due time failed", exc_info=True)
            return self.poll_s
        if due is None:
            return self.poll_s
        return min(self.poll_s, max(MIN_IDLE_S, due - self.clock()))

    async def _wait(self, stopping: asyncio.Task[bool], delay: float | None) -> None:
        """Until a job ends, ``stop``, ``notify()`` or ``delay`` (None: no timeout)."""
        extra: list[asyncio.Task[Any]] = [asyncio.create_task(self._wake.wait())]
        if delay is not None:
            extra.append(asyncio.ensure_future(self.sleep(delay)))
        try:
            await asyncio.wait(
                {stopping, *self._tasks, *extra}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in extra:
                task.cancel()
            await asyncio.gather(*extra, return_exceptions=True)
            self._wake.clear()

    # -- leases --------------------------------------------------------------------------------

    async def heartbeat(self) -> int:
        """Extend every held lease once; a job whose lease the store refuses (cancelled, or
        taken over) has its task cancelled and nothing written. How many were lost."""
        lost = 0
        for held in list(self._held.values()):
            if held.settling:
                continue
            job = held.claim.job
            if await self.store.heartbeat(job.id, held.claim.token, self.lease_s):
                continue
            if held.settling or self._held.get(job.id) is not held or held.task is None:
                continue  # it ended meanwhile: its own write decided
            held.lost = True
            held.task.cancel()
            lost += 1
            logger.info("job %s: lease lost or job cancelled; its run is abandoned", job.id)
        return lost

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.heartbeat()
            except Exception:  # the database is away: the next beat tries again
                logger.warning("heartbeating leases failed", exc_info=True)

    # -- one job -------------------------------------------------------------------------------

    async def _run_one(self, held: _Held) -> bool:
        """Run one claim to its end; True when the job ended for good (not retried)."""
        job = held.claim.job
        try:
            final = await self._attempt(held)
        except asyncio.CancelledError:
            if not held.lost:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            return False
        finally:
            if self._held.get(job.id) is held:
                del self._held[job.id]
        if final and self.on_finished is not None:
            try:
                stored = await self.store.get(job.id)
                if stored is not None:
                    await self.on_finished(stored)
            except Exception:
                logger.exception("job %s: the on_finished hook failed", job.id)
        return final

    async def _attempt(self, held: _Held) -> bool:
        job, token = held.claim.job, held.claim.token
        if not await self._take_turn(held):
            return False
        try:
            try:
                result = await self.execute(job)
                if not isinstance(result, Mapping):
                    raise TypeError(f"execute returned {type(result).__name__}, not a dict")
            except Exception as exc:
                held.settling = True
                return await self._failed(job, token, exc)
            held.settling = True
            if not await self.store.complete(job.id, token, result):
                logger.info("job %s: result refused (stale token %d)", job.id, token)
                return False
            return True
        finally:
            await self._give_turn(job)

    async def _failed(self, job: Job, token: int, exc: Exception) -> bool:
        verdict = judge(exc)
        if isinstance(exc, NoaError):
            logger.info("job %s attempt %d: %r", job.id, job.attempts, exc)
        else:
            logger.error("job %s attempt %d: unexpected", job.id, job.attempts, exc_info=exc)
        if verdict.action == "fail":
            return await self.store.fail(job.id, token, verdict.error)
        now = self.clock()
        delay = backoff_s(
            max(0, job.attempts - 1), self.base_backoff_s, self.cap_backoff_s, rng=self.rng
        )
        if verdict.retry_after is not None:
            delay = max(delay, verdict.retry_after)
        if verdict.hold is not None:  # hold back the model's or the key's next jobs
            until = now + (verdict.retry_after if verdict.retry_after is not None else delay)
            name = _names(job)[0 if verdict.hold == "model" else 1]
            self._holds = {n: h for n, h in self._holds.items() if h[0] > now}  # the spent ones
            if until > self._holds.get(name, (0.0, {}))[0]:
                self._holds[name] = (until, verdict.error)
        if job.attempts >= job.max_attempts:
            return await self.store.bury(job.id, token, verdict.error)
        if not await self.store.retry(job.id, token, verdict.error, run_at=now + delay):
            logger.info("job %s: retry refused (stale token %d)", job.id, token)
        return False

    # -- turns: per-model and per-key bounds, 429 hold-backs ------------------------------------

    def _held_until(self, job: Job) -> tuple[float, dict[str, Any]]:
        """Until when (0: not) a 429 holds the job back, and that 429's error."""
        now = self.clock()
        holds = [h for n in _names(job) if (h := self._holds.get(n)) is not None and h[0] > now]
        return max(holds, key=lambda h: h[0], default=(0.0, {}))

    def _free(self, job: Job) -> bool:
        return all(
            (limit := self._limits[name[0]]) is None or self._busy.get(name, 0) < limit
            for name in _names(job)
        )

    async def _take_turn(self, held: _Held) -> bool:
        """Wait for the job's turn (True); or hand the claim back, its attempt not counted,
        when a 429 holds it back for longer than a lease (False): a key out of budget for the
        day must not sit in every slot."""
        job = held.claim.job
        while True:
            until, why = self._held_until(job)
            if until > self.clock() + self.lease_s:
                held.settling = True
                await self.store.release(job.id, held.claim.token, until, why)
                return False
            if until:
                await self.sleep(until - self.clock())
                continue
            async with self._turns:
                await self._turns.wait_for(lambda: self._free(job))
                if self._held_until(job)[0]:
                    continue  # a 429 came while it waited
                for name in _names(job):
                    self._busy[name] = self._busy.get(name, 0) + 1
                return True

    async def _give_turn(self, job: Job) -> None:
        # the counts first, with no await before them: a second cancellation cannot leak a slot
        for name in _names(job):
            self._busy[name] -= 1
            if not self._busy[name]:
                del self._busy[name]
        async with self._turns:
            self._turns.notify_all()


def _names(job: Job) -> tuple[tuple[str, str], tuple[str, str]]:
    """What bounds a job's turn: its model and its key."""
    return ("model", model_of(job)), ("key", job.key_id)
