"""llama.cpp in a child process of its replica, driven over a pipe.

Why a process: llama-cpp-python runs Python between native calls for every token (sampling,
detokenising, stop-sequence checks). In a thread of the replica it fights the event loop for
the GIL, and on 2 cores that cost a third of the tokens per second (measured). In its own
process it runs at the speed of llama-cpp-python alone, and a crash in native code ends the
child, not the replica: the next request starts a new one.

The child serves one request at a time, in order. Every request names its model (key, GGUF path,
flavour) and the child loads what it does not hold, so a restarted child needs no replay; the
parent's LRU decides what stays loaded and sends ``unload``. A stream the parent stops reading
is cancelled at the child's next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import AsyncGenerator
from multiprocessing.connection import Connection
from typing import Any

from noa.errors import InvalidRequestError, NoaError, UpstreamError
from noa.providers.llamacpp.refs import LlamaSettings, ModelRef

# -- the child -------------------------------------------------------------------------------


def _load(settings: LlamaSettings, ref: ModelRef) -> Any:
    import llama_cpp

    kwargs: dict[str, Any] = {
        "model_path": ref.path,
        "n_ctx": settings.n_ctx,
        "n_batch": settings.n_batch,
        "n_gpu_layers": settings.n_gpu_layers,
        "verbose": False,
    }
    if settings.n_threads:
        kwargs["n_threads"] = kwargs["n_threads_batch"] = settings.n_threads
    if settings.chat_format:
        kwargs["chat_format"] = settings.chat_format
    if ref.embedding:
        # One sequence must fit a batch for pooled embeddings: let it be a whole context.
        kwargs.update(
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            n_batch=settings.n_ctx,
            n_ubatch=settings.n_ctx,
        )
    return llama_cpp.Llama(**kwargs)


class _Child:
    def __init__(self, conn: Connection, settings: LlamaSettings) -> None:
        self.conn = conn
        self.settings = settings
        self.models: dict[str, Any] = {}
        self.pending: deque[tuple[Any, ...]] = deque()

    def model(self, ref: ModelRef) -> Any:
        llm = self.models.get(ref.key)
        if llm is None:
            llm = self.models[ref.key] = _load(self.settings, ref)
        return llm

    def unload(self, key: str) -> None:
        llm = self.models.pop(key, None)
        if llm is not None:
            llm.close()

    def next_message(self) -> tuple[Any, ...]:
        return self.pending.popleft() if self.pending else self.conn.recv()

    def cancelled(self, rid: int) -> bool:
        """Read what arrived meanwhile: a cancel for ``rid`` stops it, the rest waits."""
        stop = False
        while self.conn.poll():
            message = self.conn.recv()
            if message[0] == "cancel" and message[1] == rid:
                stop = True
            elif message[0] != "cancel":
                self.pending.append(message)
        return stop

    def run(self) -> None:
        while True:
            try:
                message = self.next_message()
            except (EOFError, OSError):
                return  # the replica went away
            op = message[0]
            if op == "shutdown":
                return
            if op == "unload":
                self.unload(message[1])
                continue
            if op == "cancel":
                continue  # for a request that already finished
            _, rid, ref, payload = message
            try:
                llm = self.model(ref)
                if op.endswith("_stream"):
                    self.stream(rid, llm, op, payload)
                else:
                    self.conn.send(("result", rid, self.call(llm, op, payload)))
            except ValueError as e:  # llama.cpp's way to say "prompt too long" and the like
                self.conn.send(("error", rid, "invalid", str(e)))
            except Exception as e:
                self.conn.send(("error", rid, "failed", f"{type(e).__name__}: {e}"))

    @staticmethod
    def call(llm: Any, op: str, payload: dict[str, Any]) -> Any:
        if op == "load":
            return None
        if op == "chat":
            return llm.create_chat_completion(**payload)
        if op == "completion":
            return [llm.create_completion(p, **payload["kwargs"]) for p in payload["prompts"]]
        if op == "embed":
            vectors, tokens = llm.embed(
                payload["inputs"], normalize=True, truncate=False, return_count=True
            )
            return {"vectors": vectors, "tokens": tokens, "dimensions": llm.n_embd()}
        raise ValueError(f"unknown operation {op}")

    def stream(self, rid: int, llm: Any, op: str, payload: dict[str, Any]) -> None:
        if op == "chat_stream":
            chunks = llm.create_chat_completion(**payload, stream=True)
        else:
            chunks = llm.create_completion(payload["prompt"], **payload["kwargs"], stream=True)
        prompt_tokens = completion_tokens = 0
        held: list[dict[str, Any]] = []
        try:
            for chunk in chunks:
                choices = chunk.get("choices") or []
                # One chunk per token; the closing chunk (finish_reason set) carries none. When
                # the first token arrives the context holds exactly the prompt.
                if (
                    choices
                    and choices[0].get("finish_reason") is None
                    and ("text" in choices[0] or "content" in choices[0].get("delta", {}))
                ):
                    if completion_tokens == 0:
                        prompt_tokens = int(llm.n_tokens)
                    completion_tokens += 1
                held.append(chunk)
                if choices and choices[0].get("delta") == {"role": "assistant"}:
                    continue  # the role chunk travels with the first token, not alone
                self.conn.send(("chunks", rid, held))
                held = []
                if self.cancelled(rid):
                    break
            if held:
                self.conn.send(("chunks", rid, held))
        finally:
            chunks.close()
        self.conn.send(("end", rid, {"prompt": prompt_tokens, "completion": completion_tokens}))


def _child_main(argv: list[str]) -> None:
    """``python -m noa.providers.llamacpp.process FD SETTINGS_JSON``: serve on the inherited
    socket until the replica closes it."""
    fd, settings = int(argv[0]), LlamaSettings(**json.loads(argv[1]))
    _Child(Connection(fd), settings).run()


# -- the parent ------------------------------------------------------------------------------


class LlamaProcess:
    """The replica's side: requests in, results and chunks out, over one pipe."""

    def __init__(self, settings: LlamaSettings, name: str = "llama") -> None:
        self._settings = settings
        self._name = name
        self._ids = itertools.count(1)
        # rid -> (the child it was sent to, its queue): a dying child fails only its own.
        self._waiters: dict[int, tuple[int, asyncio.Queue[tuple[Any, ...]]]] = {}
        self._generation = 0
        self._send_lock = threading.Lock()  # unload may come from Serve's eviction thread
        self._conn: Connection | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _start(self) -> Connection:
        if self._conn is not None and self._proc is not None and self._proc.poll() is None:
            return self._conn
        loop = self._loop = asyncio.get_running_loop()
        # A fresh interpreter (never a fork of a threaded Ray worker), joined by a socket pair.
        ours, theirs = socket.socketpair()
        settings = json.dumps(dataclasses.asdict(self._settings))
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(theirs.fileno()), settings],
            pass_fds=(theirs.fileno(),),
        )
        theirs.close()
        conn = Connection(ours.detach())
        self._generation += 1
        self._conn, self._proc = conn, proc
        # The event loop reads the child's messages itself when they arrive: no reader thread,
        # so no GIL hand-over per token.
        loop.add_reader(conn.fileno(), self._read, conn, proc, self._generation)
        return conn

    def _read(self, conn: Connection, proc: subprocess.Popen[bytes], generation: int) -> None:
        try:
            while conn.poll(0):
                self._deliver(conn.recv())
        except (EOFError, OSError):
            assert self._loop is not None
            self._loop.remove_reader(conn.fileno())
            code = proc.poll()
            if code is None:
                proc.kill()
                code = proc.wait()
            self._fail_all(
                conn, generation, ("died", 0, f"the llama.cpp worker exited (code {code})")
            )
            conn.close()

    def _deliver(self, message: tuple[Any, ...]) -> None:
        waiter = self._waiters.get(message[1])
        if waiter is not None:
            waiter[1].put_nowait(message)

    def _fail_all(self, conn: Connection, generation: int, died: tuple[Any, ...]) -> None:
        if self._conn is conn:
            self._conn = None
        for child, queue in self._waiters.values():
            if child == generation:
                queue.put_nowait(died)

    def _register(self) -> tuple[int, asyncio.Queue[tuple[Any, ...]]]:
        self._start()
        rid = next(self._ids)
        queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._waiters[rid] = (self._generation, queue)
        return rid, queue

    def _send(self, message: tuple[Any, ...]) -> None:
        conn = self._start()
        with self._send_lock:
            conn.send(message)

    def _raise(self, message: tuple[Any, ...]) -> NoaError:
        if message[0] == "error" and message[2] == "invalid":
            return InvalidRequestError(f"local model rejected the request: {message[3]}")
        text = message[3] if message[0] == "error" else message[2]
        return UpstreamError(f"local model failed: {text}", provider=self._name)

    async def call(self, op: str, ref: ModelRef, payload: dict[str, Any]) -> Any:
        """One request (``load``, ``chat``, ``completion``, ``embed``) and its result."""
        rid, queue = self._register()
        try:
            self._send((op, rid, ref, payload))
            message = await queue.get()
        finally:
            self._waiters.pop(rid, None)
        if message[0] != "result":
            raise self._raise(message)
        return message[2]

    async def stream(
        self, op: str, ref: ModelRef, payload: dict[str, Any], usage: dict[str, int]
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Chunks as the child produces them, those that arrived together in one list;
        ``usage`` is filled when the stream ends."""
        rid, queue = self._register()
        finished = False
        try:
            self._send((op + "_stream", rid, ref, payload))
            while True:
                batch: list[dict[str, Any]] = []
                message = await queue.get()
                while message[0] == "chunks":
                    batch.extend(message[2])
                    if queue.empty():
                        break
                    message = queue.get_nowait()
                if batch:
                    yield batch
                if message[0] == "chunks":
                    continue
                finished = True
                if message[0] == "end":
                    usage.update(message[2])
                    return
                raise self._raise(message)
        finally:
            self._waiters.pop(rid, None)
            if not finished and self._conn is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._send(("cancel", rid))

    def unload(self, key: str) -> None:
        if self._conn is None:
            return
        with contextlib.suppress(OSError, ValueError), self._send_lock:
            self._conn.send(("unload", key))

    async def aclose(self) -> None:
        conn, proc = self._conn, self._proc
        self._conn = None
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("shutdown",))
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(conn.fileno())
        if proc is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(None, proc.wait, 5)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    _child_main(sys.argv[1:])
