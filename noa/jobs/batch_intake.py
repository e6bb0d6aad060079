"""A batch's validation: its input file read line by line (streamed) into jobs.

Lines come in groups of ``group_size`` (or fewer, past ``GROUP_CHARS`` characters); each
group is one transaction that records the valid lines' ``custom_id``\\ s (unique per batch:
a later line with a ``custom_id`` taken is a ``duplicate_custom_id`` error), submits their
jobs through ``JobStore.submit_many`` (low priority, the batch's key, ``parent_id`` the batch,
idempotency key ``<batch id>:<line>``, metadata ``custom_id`` and ``line``), stores the invalid
lines' errors, and moves the checkpoint ``lines_read`` on, guarded by the batch's token: an
advance killed mid-file resumes after its last group, and makes none of its jobs twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from noa.jobs import batch_sql as sql
from noa.jobs.batch_lines import BatchLine, LineError, blank, duplicate, parse_line, too_long
from noa.jobs.batch_sql import Batch, LeaseLost
from noa.jobs.files import FileStore
from noa.jobs.model import JobSpec, Priority
from noa.jobs.store import JobStore
from noa.storage.db import Database

Clock = Callable[[], float]
MAX_LINE_CHARS = 10 * 1024 * 1024
GROUP_CHARS = 8 * 1024 * 1024  # a group is cut short past this many characters of lines
MAX_REPORTED_ERRORS = 100  # a failed batch's ``errors``: its first invalid lines


@dataclass
class Intake:
    db: Database
    jobs: JobStore
    files: FileStore
    clock: Clock
    group_size: int
    notify: Callable[[], None]

    async def read(self, b: Batch, lease_s: float) -> list[dict[str, Any]]:
        """Read the rest of ``b``'s input file (after its checkpoint) into jobs, a group per
        transaction: no errors when the batch has valid lines, else why it fails (its first
        invalid lines)."""
        if await self.files.get(b.input_file_id) is None:
            return [
                {
                    "code": "file_not_found",
                    "message": f"The input file `{b.input_file_id}` no longer exists",
                    "param": "input_file_id",
                    "line": None,
                }
            ]
        group: list[BatchLine | LineError] = []
        chars, read = 0, b.lines_read
        lines = self.files.lines(b.input_file_id, b.lines_read, MAX_LINE_CHARS)
        async for number, text in lines:
            read = number
            if text is None:
                group.append(too_long(number, MAX_LINE_CHARS))
            elif not blank(text):
                group.append(parse_line(text, number, b.endpoint))
                chars += len(text)
            if len(group) >= self.group_size or chars >= GROUP_CHARS:
                await self._checkpoint(b, group, read, lease_s)
                group, chars = [], 0
        await self._checkpoint(b, group, read, lease_s)
        row = await self.db.fetchrow(sql.REQUESTS, b.id)
        if row is not None and int(row["n"]) > 0:
            return []
        errors = [
            {"code": r["code"], "message": r["message"], "param": r["param"], "line": r["line"]}
            for r in await self.db.fetch(sql.LINE_ERRORS, b.id, MAX_REPORTED_ERRORS)
        ]
        return errors or [
            {
                "code": "empty_file",
                "message": "The input file has no requests",
                "param": None,
                "line": None,
            }
        ]

    async def _checkpoint(
        self, b: Batch, group: list[BatchLine | LineError], read: int, lease_s: float
    ) -> None:
        """One group of lines stored in one transaction with the checkpoint ``read``."""
        errors = [g for g in group if isinstance(g, LineError)]
        firsts: dict[str, BatchLine] = {}
        for line in (g for g in group if isinstance(g, BatchLine)):
            if line.custom_id in firsts:
                errors.append(duplicate(line, firsts[line.custom_id].line))
            else:
                firsts[line.custom_id] = line
        now = self.clock()
        async with self.db.transaction() as tx:
            new = await self._new_lines(tx, b, firsts, errors)
            if new:
                await tx.executemany(sql.INSERT_REQUEST, [(b.id, n.custom_id, n.line) for n in new])
                await self.jobs.submit_many([self._spec(b, n) for n in new], tx)
            if errors:
                await tx.executemany(
                    sql.INSERT_LINE_ERROR,
                    [(b.id, e.line, e.custom_id, e.code, e.message, e.param) for e in errors],
                )
            if await tx.fetchrow(sql.CHECKPOINT, read, now + lease_s, now, b.id, b.token) is None:
                raise LeaseLost()
        if new:
            self.notify()

    async def _new_lines(
        self, tx: Database, b: Batch, firsts: dict[str, BatchLine], errors: list[LineError]
    ) -> list[BatchLine]:
        """The group's lines whose ``custom_id`` no earlier line has (the others: errors)."""
        if not firsts:
            return []
        marks = ", ".join(f"${i + 2}" for i in range(len(firsts)))
        taken = {
            r["custom_id"]: int(r["line"])
            for r in await tx.fetch(
                "SELECT custom_id, line FROM noa_batch_requests"
                f" WHERE batch_id = $1 AND custom_id IN ({marks})",
                b.id,
                *firsts,
            )
        }
        new = []
        for custom_id, line in firsts.items():
            first = taken.get(custom_id)
            if first is None:
                new.append(line)
            elif first != line.line:
                errors.append(duplicate(line, first))
        return new

    @staticmethod
    def _spec(b: Batch, line: BatchLine) -> JobSpec:
        return JobSpec(
            endpoint=b.endpoint,
            body=line.body,
            priority=Priority.LOW,
            metadata={"custom_id": line.custom_id, "line": line.line},
            key_id=b.key_id,
            team=b.team,
            idempotency_key=f"{b.id}:{line.line}",
            parent_id=b.id,
            traceparent=b.traceparent,
        )
