"""OpenAI's Batch API over the job system: a batch's input file becomes one low-priority job per
line, and its output and error files are written from their results.

``advance(owner, lease_s, limit)`` takes each due batch one step, under a lease (so that two
replicas never advance one batch at once; see ``batch_sql``):

- ``validating``: the input file is read line by line (streamed), groups of ``group_size``
  lines made into jobs through ``JobStore.submit_many`` in one transaction per group, which
  also records the valid lines' ``custom_id``\\ s (unique per batch), the invalid lines' errors
  and the checkpoint ``lines_read``: an advance killed mid-file resumes after the last group,
  none of its jobs made twice (each job's idempotency key is ``<batch id>:<line>`` besides).
  No valid line: ``failed``, with the first lines' errors; else ``in_progress``.
- ``in_progress``: once every job is final, ``finalizing``, the output and error files
  written (invisible until the transaction that makes the batch ``completed``).
- past ``expires_at`` (created + 24 h), the unfinished jobs are cancelled, what finished is
  written, and the batch is ``expired``; ``cancelling`` (``cancel``: its queued jobs cancelled
  at once) becomes ``cancelled`` once none of its jobs runs.

A batch with a ``callback_url`` gets its webhook (``batch.completed``, ``batch.failed``,
``batch.expired``, ``batch.cancelled``) enqueued in the transaction that makes it final.
"""

from __future__ import annotations

import builtins
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from noa.errors import ConflictError, InvalidRequestError, NotFoundError
from noa.jobs import batch_output as output
from noa.jobs import batch_sql as sql
from noa.jobs import job_sql
from noa.jobs.batch_intake import Intake
from noa.jobs.batch_sql import Batch, BatchStatus, LeaseLost
from noa.jobs.files import FileObject, FileStore
from noa.jobs.job_sql import locked
from noa.jobs.model import ENDPOINTS, Job, JobStatus, dumps
from noa.jobs.store import JobStore
from noa.jobs.webhook_outbox import enqueue
from noa.storage.db import Database

logger = logging.getLogger("noa.jobs.batches")

Clock = Callable[[], float]
WINDOWS = {"24h": 24 * 3600.0}
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512
UNFINISHED = "('queued', 'running')"


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex[:24]}"


def _invalid(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid value for '{param}': {message}", param=param, code="invalid_value"
    )


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str] | None:
    """OpenAI's metadata: up to 16 string pairs, keys up to 64 characters, values up to 512."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping) or len(metadata) > MAX_METADATA_PAIRS:
        raise _invalid("metadata", f"an object of at most {MAX_METADATA_PAIRS} pairs")
    for key, value in metadata.items():
        if not (isinstance(key, str) and isinstance(value, str)):
            raise _invalid("metadata", "its keys and values must be strings")
        if len(key) > MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
            raise _invalid(
                "metadata",
                f"keys of at most {MAX_METADATA_KEY} characters,"
                f" values of at most {MAX_METADATA_VALUE}",
            )
    dumps(dict(metadata))  # a lone surrogate cannot be stored
    return dict(metadata)


class BatchStore:
    """Create, read, list and cancel batches, and ``advance`` them; see the module docstring."""

    def __init__(
        self,
        db: Database,
        jobs: JobStore,
        files: FileStore,
        clock: Clock = time.time,
        *,
        group_size: int = 500,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        if group_size < 1:
            raise ValueError("group_size must be at least 1")
        self.db = db
        self.jobs = jobs
        self.files = files
        self.clock = clock
        self.intake = Intake(db, jobs, files, clock, group_size, notify)

    # -- the API -----------------------------------------------------------------------------

    async def create(
        self,
        *,
        key_id: str,
        team: str | None,
        input_file_id: str,
        endpoint: str,
        completion_window: str = "24h",
        metadata: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        scope: str | None = None,
        traceparent: str | None = None,
    ) -> Batch:
        """A new ``validating`` batch of ``key_id``'s over the input file (``scope``'s, when
        given: a key's own file): a 400 for a bad endpoint, window, metadata or file purpose,
        a 404 for no such file."""
        if endpoint not in ENDPOINTS:
            raise _invalid("endpoint", f"expected one of {', '.join(sorted(ENDPOINTS))}")
        if completion_window not in WINDOWS:
            raise _invalid("completion_window", "expected '24h'")
        kept = check_metadata(metadata)
        file = await self.files.get(input_file_id, scope)
        if file is None:
            raise NotFoundError(
                f"No file `{input_file_id}`", param="input_file_id", code="file_not_found"
            )
        if file.purpose != "batch":
            raise _invalid("input_file_id", f"the file's purpose is {file.purpose!r}, not 'batch'")
        now = self.clock()
        b = Batch(
            id=new_batch_id(),
            key_id=key_id,
            team=team,
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window=completion_window,
            status=BatchStatus.VALIDATING,
            created_at=now,
            expires_at=now + WINDOWS[completion_window],
            updated_at=now,
            metadata=kept,
            callback_url=callback_url,
            traceparent=traceparent,
        )
        await self.db.execute(sql.INSERT, *sql.values(b))
        return b

    async def get(self, batch_id: str, key_id: str | None = None) -> Batch | None:
        """The batch (with live request counts while it runs); with ``key_id``, only if it is
        that key's."""
        row = await self.db.fetchrow(sql.BY_ID, batch_id)
        if row is None or (key_id is not None and row["key_id"] != key_id):
            return None
        return await self._counted(sql.batch(row))

    async def list(
        self, key_id: str | None = None, limit: int = 20, after: str | None = None
    ) -> list[Batch]:
        """A page of batches, newest first: ``key_id``'s own (None: everyone's), after the
        batch ``after``."""
        query, args = sql.listing(key_id, after)
        return [await self._counted(sql.batch(r)) for r in await self.db.fetch(query, *args, limit)]

    async def cancel(self, batch_id: str, key_id: str | None = None) -> Batch | None:
        """Cancel a validating or in-progress batch: ``cancelling`` (its queued jobs cancelled
        now), ``cancelled`` once none of its jobs runs (a later advance). None when there is
        no such batch; a 409 when it is past cancelling."""
        current = await self.get(batch_id, key_id)
        if current is None:
            return None
        if current.status == BatchStatus.CANCELLING:
            return current
        now = self.clock()
        async with self.db.transaction() as tx:
            ended: builtins.list[Job] = []
            if await tx.fetchrow(sql.CANCEL, now, batch_id) is not None:
                ended = await self._cancel_children(tx, batch_id, "('queued')", now)
                cancelled = True
            else:
                cancelled = False
        self.jobs.announce(ended)
        after = await self.get(batch_id, key_id)
        if not cancelled and after is not None and after.status != BatchStatus.CANCELLING:
            raise ConflictError(
                f"Batch `{batch_id}` is {after.status.value}: only a validating or in-progress"
                " batch can be cancelled",
                param="batch_id",
                code="batch_not_cancellable",
            )
        return after

    async def counts(self, b: Batch) -> tuple[int, int, int]:
        """(total, completed, failed) requests: the batch's jobs by status, and its invalid
        lines (failed)."""
        by_status = {r["status"]: int(r["n"]) for r in await self.db.fetch(sql.CHILDREN, b.id)}
        row = await self.db.fetchrow(sql.INVALID, b.id)
        invalid = int(row["n"]) if row else 0
        completed = by_status.get(JobStatus.COMPLETED.value, 0)
        failed = invalid + sum(
            by_status.get(s.value, 0)
            for s in (JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED)
        )
        return sum(by_status.values()) + invalid, completed, failed

    async def _counted(self, b: Batch) -> Batch:
        if b.status.final:
            return b
        total, completed, failed = await self.counts(b)
        return replace(b, total_count=total, completed_count=completed, failed_count=failed)

    # -- advancing ---------------------------------------------------------------------------

    async def advance(self, owner: str, lease_s: float = 60.0, limit: int = 10) -> int:
        """Take up to ``limit`` due batches one step each, as ``owner`` (a replica) holding
        each under a lease of ``lease_s``; how many changed status. A step that fails is
        logged and left to its lease's end (then another advance tries it again)."""
        now = self.clock()
        async with self.db.transaction() as tx:
            rows = await tx.fetch(locked(sql.CLAIM, tx.dialect), now, limit, owner, now + lease_s)
        moved = 0
        for b in (sql.batch(r) for r in rows):
            try:
                moved += await self._step(b, lease_s)
            except LeaseLost:
                logger.info("batch %s: lease lost or status changed while advancing", b.id)
            except Exception:
                logger.exception("batch %s: advancing failed (retried after its lease)", b.id)
        return moved

    async def _step(self, b: Batch, lease_s: float) -> bool:
        now = self.clock()
        if b.status in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS) and now >= b.expires_at:
            return await self._end(b, BatchStatus.EXPIRED, lease_s)
        if b.status == BatchStatus.VALIDATING:
            return await self._validate(b, lease_s)
        if b.status == BatchStatus.FINALIZING:  # a finalize cut short: written again
            return await self._end(b, BatchStatus.COMPLETED, lease_s)
        if b.status == BatchStatus.CANCELLING:
            async with self.db.transaction() as tx:  # retried or recovered jobs since
                since = await self._cancel_children(tx, b.id, "('queued')", now)
            self.jobs.announce(since)
        if await self._unfinished(b.id):
            await self.db.execute(sql.RELEASE, b.id, b.token)
            return False
        ended = BatchStatus.CANCELLED if b.status == BatchStatus.CANCELLING else None
        return await self._end(b, ended or BatchStatus.COMPLETED, lease_s)

    async def _unfinished(self, batch_id: str) -> int:
        by_status = {r["status"]: int(r["n"]) for r in await self.db.fetch(sql.CHILDREN, batch_id)}
        return by_status.get("queued", 0) + by_status.get("running", 0)

    async def _cancel_children(
        self, tx: Database, batch_id: str, which: str, now: float
    ) -> builtins.list[Job]:
        """The batch's jobs of those statuses cancelled: those jobs (to ``announce`` once the
        transaction committed)."""
        if "running" in which:
            await tx.execute(sql.END_ATTEMPTS, now, batch_id)
        query = sql.CANCEL_CHILDREN.replace("{statuses}", which).replace("{cols}", job_sql.COLS)
        return [job_sql.job(r) for r in await tx.fetch(query, now, batch_id)]

    # -- validating --------------------------------------------------------------------------

    async def _validate(self, b: Batch, lease_s: float) -> bool:
        errors = await self.intake.read(b, lease_s)
        if errors:
            return await self._fail(b, errors)
        now = self.clock()
        await self._move(
            b, BatchStatus.IN_PROGRESS, in_progress_at=now, lease_owner=None, lease_expires_at=None
        )
        return True

    # -- ending ------------------------------------------------------------------------------

    async def _move(
        self, b: Batch, to: BatchStatus, tx: Database | None = None, **changes: Any
    ) -> Batch:
        """``b`` set to ``to`` with ``changes``, guarded by its token and status."""
        changes = {"status": to.value, "updated_at": self.clock(), **changes}
        query = sql.transition(changes)
        row = await (tx or self.db).fetchrow(
            query, *changes.values(), b.id, b.token, b.status.value
        )
        if row is None:
            raise LeaseLost()
        return sql.batch(row)

    async def _fail(self, b: Batch, errors: builtins.list[dict[str, Any]]) -> bool:
        now = self.clock()
        total, _, failed_count = await self.counts(b)
        async with self.db.transaction() as tx:
            failed = await self._move(
                b,
                BatchStatus.FAILED,
                tx,
                failed_at=now,
                lease_owner=None,
                lease_expires_at=None,
                errors=dumps({"object": "list", "data": errors}),
                total_count=total,
                completed_count=0,
                failed_count=failed_count,
            )
            await self._notify_final(tx, failed, now)
        return True

    async def _end(self, b: Batch, ended: BatchStatus, lease_s: float) -> bool:
        """Write the output and error files and make the batch ``ended`` (completed, expired or
        cancelled) with them, in one transaction (the webhook's too)."""
        now = self.clock()
        if ended == BatchStatus.COMPLETED and b.status != BatchStatus.FINALIZING:
            b = await self._move(b, BatchStatus.FINALIZING, finalizing_at=now)
        if ended == BatchStatus.EXPIRED:
            async with self.db.transaction() as tx:
                expired = await self._cancel_children(tx, b.id, UNFINISHED, now)
            self.jobs.announce(expired)

        async def extend() -> None:
            at = self.clock() + lease_s
            if await self.db.fetchrow(sql.EXTEND, at, b.id, b.token, b.status.value) is None:
                raise LeaseLost()

        written: builtins.list[FileObject | None] = []
        try:
            for name, lines in (
                ("output", output.output_lines(self.db, b, extend)),
                ("errors", output.error_lines(self.db, b, ended, extend)),
            ):
                file = await self.files.write(
                    b.key_id, "batch_output", f"{b.id}_{name}.jsonl", lines, publish=False
                )
                written.append(file if file.bytes else None)
                if not file.bytes:
                    await self.files.discard(file.id)
            total, completed, failed = await self.counts(b)
            out, err = written
            async with self.db.transaction() as tx:
                final = await self._move(
                    b,
                    ended,
                    tx,
                    **{f"{ended.value}_at": now},
                    output_file_id=out.id if out else None,
                    error_file_id=err.id if err else None,
                    total_count=total,
                    completed_count=completed,
                    failed_count=failed,
                    lease_owner=None,
                    lease_expires_at=None,
                )
                for kept in (out, err):
                    if kept is not None:
                        await self.files.publish(tx, kept.id)
                await self._notify_final(tx, final, now)
        except BaseException:
            for kept in written:
                if kept is not None:
                    await self.files.discard(kept.id)
            raise
        return True

    async def _notify_final(self, tx: Database, b: Batch, now: float) -> None:
        if b.callback_url is not None:
            await enqueue(
                tx,
                kind="batch",
                subject_id=b.id,
                url=b.callback_url,
                event_type=f"batch.{b.status.value}",
                data=b.public(),
                now=now,
            )
