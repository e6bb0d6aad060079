"""Files, as OpenAI's ``/v1/files`` keeps them: batch input uploaded by clients, batch output
written by NOA, stored in the database as UTF-8 text chunks, never held whole in memory.

``create`` streams an upload's byte chunks through an incremental UTF-8 decoder (a chunk may
end inside a multibyte character) into ``noa_file_chunks`` rows of about ``CHUNK_BYTES`` each,
every one written on its own (a big upload never holds the database's write lock for long).
The file row stays ``uploading`` (invisible) until its last chunk is written; a file over
``max_bytes`` (413), not UTF-8 or holding NUL (400: PostgreSQL's TEXT cannot hold it, and a
batch file is JSONL text) is removed as it is refused; a crash mid-upload leaves an invisible
row that ``cleanup`` removes. ``content`` and ``lines`` read it back chunk by chunk.
"""

from __future__ import annotations

import builtins
import codecs
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from noa.errors import InvalidRequestError, PayloadTooLargeError
from noa.storage.db import Database, Row
from noa.wire.fields import storable

Clock = Callable[[], float]
CHUNK_BYTES = 1024 * 1024
UPLOAD_PURPOSES = frozenset({"batch"})
PURPOSES = frozenset({"batch", "batch_output"})
UPLOADING = "uploading"  # the row of a file still being written: invisible
PROCESSED = "processed"
MAX_FILENAME = 255

COLS = "id, key_id, purpose, filename, bytes, chunks, status, created_at, updated_at, expires_at"
INSERT = (
    f"INSERT INTO noa_files ({COLS}) VALUES ($1, $2, $3, $4, 0, 0, '{UPLOADING}', $5, $5, NULL)"
)
INSERT_CHUNK = "INSERT INTO noa_file_chunks (file_id, seq, data) VALUES ($1, $2, $3)"
TOUCH = "UPDATE noa_files SET bytes = $1, chunks = $2, updated_at = $3 WHERE id = $4"
FINISH = (
    f"UPDATE noa_files SET status = $1, updated_at = $2 WHERE id = $3 AND status = '{UPLOADING}'"
)
BY_ID = f"SELECT {COLS} FROM noa_files WHERE id = $1 AND status <> '{UPLOADING}'"
CHUNK = "SELECT data FROM noa_file_chunks WHERE file_id = $1 AND seq = $2"
DELETE_CHUNKS = "DELETE FROM noa_file_chunks WHERE file_id = $1"
DELETE = "DELETE FROM noa_files WHERE id = $1"
STALE = f"SELECT id FROM noa_files WHERE status = '{UPLOADING}' AND updated_at < $1 LIMIT 100"


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class FileObject:
    id: str
    key_id: str
    purpose: str
    filename: str
    bytes: int
    chunks: int
    status: str
    created_at: float
    expires_at: float | None = None

    def public(self) -> dict[str, Any]:
        """OpenAI's file object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": int(self.created_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": self.status,
            "expires_at": None if self.expires_at is None else int(self.expires_at),
            "status_details": None,
        }


def _file(row: Row) -> FileObject:
    return FileObject(
        id=row["id"],
        key_id=row["key_id"],
        purpose=row["purpose"],
        filename=row["filename"],
        bytes=int(row["bytes"]),
        chunks=int(row["chunks"]),
        status=row["status"],
        created_at=float(row["created_at"]),
        expires_at=row["expires_at"],
    )


def check_purpose(purpose: str, allowed: frozenset[str] = UPLOAD_PURPOSES) -> str:
    if purpose not in allowed:
        raise InvalidRequestError(
            f"Invalid value for 'purpose': expected one of {', '.join(sorted(allowed))}"
            " (NOA keeps batch files only)",
            param="purpose",
            code="invalid_value",
        )
    return purpose


def check_filename(filename: str) -> str:
    if not filename or len(filename) > MAX_FILENAME or not storable(filename):
        raise InvalidRequestError(
            f"Invalid value for 'file': its name must be 1 to {MAX_FILENAME} characters",
            param="file",
            code="invalid_value",
        )
    return filename


def _not_text(detail: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid file: {detail}; a batch file is JSONL, UTF-8 text",
        param="file",
        code="invalid_file",
    )


class FileStore:
    """Create (streamed), read, list and delete files; see the module docstring."""

    def __init__(self, db: Database, clock: Clock = time.time) -> None:
        self.db = db
        self.clock = clock

    async def create(
        self,
        key_id: str,
        purpose: str,
        filename: str,
        chunks: AsyncIterator[bytes],
        max_bytes: int,
    ) -> FileObject:
        """Store an upload read from ``chunks``: the file, once all of it is stored."""
        check_purpose(purpose)
        return await self._store(key_id, purpose, check_filename(filename), chunks, max_bytes)

    async def write(
        self,
        key_id: str,
        purpose: str,
        filename: str,
        lines: AsyncIterator[str],
        publish: bool = True,
    ) -> FileObject:
        """A file NOA makes, one line (a newline appended) per item of ``lines``. With
        ``publish`` False it stays invisible until ``publish(tx, id)``: a batch makes its
        output files visible in the transaction that ends it (a crash before leaves invisible
        rows that ``cleanup`` removes)."""
        check_purpose(purpose, PURPOSES)

        async def encoded() -> AsyncIterator[bytes]:
            async for line in lines:
                yield (line if line.endswith("\n") else line + "\n").encode("utf-8")

        return await self._store(
            key_id, purpose, check_filename(filename), encoded(), None, publish=publish
        )

    async def _store(
        self,
        key_id: str,
        purpose: str,
        filename: str,
        chunks: AsyncIterator[bytes],
        max_bytes: int | None,
        publish: bool = True,
    ) -> FileObject:
        file_id, now = new_file_id(), self.clock()
        await self.db.execute(INSERT, file_id, key_id, purpose, filename, now)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        size = seq = pending_bytes = 0
        pending: list[str] = []
        try:
            async for piece in chunks:
                size += len(piece)
                if max_bytes is not None and size > max_bytes:
                    raise PayloadTooLargeError(
                        f"The file is larger than this server's limit of {max_bytes} bytes",
                        param="file",
                        code="file_too_large",
                    )
                pending.append(self._decode(decoder, piece, False))
                pending_bytes += len(piece)
                if pending_bytes >= CHUNK_BYTES:
                    await self._chunk(file_id, seq, "".join(pending), size)
                    seq, pending, pending_bytes = seq + 1, [], 0
            pending.append(self._decode(decoder, b"", True))
            if pending_bytes or seq == 0:
                await self._chunk(file_id, seq, "".join(pending), size)
                seq += 1
            if publish:
                await self.db.execute(FINISH, PROCESSED, self.clock(), file_id)
        except BaseException:
            await self._remove(file_id)
            raise
        return FileObject(file_id, key_id, purpose, filename, size, seq, PROCESSED, now)

    @staticmethod
    def _decode(decoder: codecs.IncrementalDecoder, piece: bytes, final: bool) -> str:
        try:
            text: str = decoder.decode(piece, final)
        except UnicodeDecodeError as e:
            raise _not_text(f"it is not UTF-8 ({e.reason})") from None
        if "\x00" in text:
            raise _not_text("it holds a NUL character")
        return text

    async def _chunk(self, file_id: str, seq: int, data: str, size: int) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(INSERT_CHUNK, file_id, seq, data)
            await tx.execute(TOUCH, size, seq + 1, self.clock(), file_id)

    async def _remove(self, file_id: str) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(DELETE_CHUNKS, file_id)
            await tx.execute(DELETE, file_id)

    async def publish(self, tx: Database, file_id: str) -> None:
        """Make a file written with ``publish=False`` visible, in the caller's transaction."""
        await tx.execute(FINISH, PROCESSED, self.clock(), file_id)

    async def discard(self, file_id: str) -> None:
        """Remove a file (visible or not) and its content."""
        await self._remove(file_id)

    async def get(self, file_id: str, key_id: str | None = None) -> FileObject | None:
        """The file; with ``key_id``, only if it is that key's."""
        row = await self.db.fetchrow(BY_ID, file_id)
        if row is None or (key_id is not None and row["key_id"] != key_id):
            return None
        return _file(row)

    async def list(
        self,
        key_id: str | None = None,
        purpose: str | None = None,
        limit: int = 20,
        after: str | None = None,
        order: Literal["asc", "desc"] = "desc",
    ) -> builtins.list[FileObject]:
        """A page of files by ``created_at`` (then id), ``key_id``'s own (None: everyone's),
        of one ``purpose``, after the file ``after`` (the last of the previous page)."""
        where, args = [f"status <> '{UPLOADING}'"], []
        for column, value in (("key_id", key_id), ("purpose", purpose)):
            if value is not None:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        compare, direction = ("<", "DESC") if order == "desc" else (">", "ASC")
        if after is not None:
            args.append(after)
            where.append(
                f"(created_at, id) {compare}"
                f" (SELECT created_at, id FROM noa_files WHERE id = ${len(args)})"
            )
        query = (
            f"SELECT {COLS} FROM noa_files WHERE {' AND '.join(where)}"
            f" ORDER BY created_at {direction}, id {direction} LIMIT ${len(args) + 1}"
        )
        return [_file(r) for r in await self.db.fetch(query, *args, max(0, limit))]

    async def delete(self, file_id: str, key_id: str | None = None) -> bool:
        """Remove the file (``key_id``'s, when given) and its content; False when none."""
        if await self.get(file_id, key_id) is None:
            return False
        await self._remove(file_id)
        return True

    async def content(self, file_id: str) -> AsyncIterator[bytes]:
        """The file's bytes, a chunk (~1 MiB) at a time, as they were uploaded."""
        async for text in self._texts(file_id):
            yield text.encode("utf-8")

    async def _texts(self, file_id: str) -> AsyncIterator[str]:
        seq = 0
        while (row := await self.db.fetchrow(CHUNK, file_id, seq)) is not None:
            yield row["data"]
            seq += 1

    async def lines(
        self, file_id: str, start: int = 0, max_chars: int | None = None
    ) -> AsyncIterator[tuple[int, str | None]]:
        """The file's lines after the first ``start``: (line number from 1, its text without
        the line break), streamed chunk by chunk. A line longer than ``max_chars`` is not
        kept: it comes as (number, None). A final line without a line break counts; a leading
        byte order mark is dropped."""
        parts: list[str] = []
        number, size, dropped = 0, 0, False
        async for text in self._texts(file_id):
            if number == 0 and not parts and text.startswith("\ufeff"):
                text = text[1:]
            breaks = text.count("\n")
            if number + breaks < start:  # lines already read, to the chunk's end: skip it
                number, parts, size, dropped = number + breaks, [], 0, False
                continue
            pos = 0
            while (end := text.find("\n", pos)) != -1:
                number += 1
                if number > start:
                    piece = text[pos:end]
                    too_long = dropped or (max_chars is not None and size + len(piece) > max_chars)
                    yield number, None if too_long else _line("".join(parts) + piece)
                parts, size, dropped, pos = [], 0, False, end + 1
            rest = text[pos:]
            if dropped or (max_chars is not None and size + len(rest) > max_chars):
                parts, size, dropped = [], 0, True
            elif rest:
                parts.append(rest)
                size += len(rest)
        if parts or dropped:
            number += 1
            if number > start:
                yield number, None if dropped else _line("".join(parts))

    async def cleanup(self, older_than_s: float = 3600.0) -> int:
        """Remove files left invisible (an upload or a batch's output cut short) and untouched
        for ``older_than_s``; how many."""
        removed = 0
        while rows := await self.db.fetch(STALE, self.clock() - older_than_s):
            for row in rows:
                await self._remove(row["id"])
            removed += len(rows)
        return removed


def _line(text: str) -> str:
    return text[:-1] if text.endswith("\r") else text
