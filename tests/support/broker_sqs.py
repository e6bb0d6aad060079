"""The outside view of SQS (moto) for the bridge tests (``brokers.BrokerProbe``): a producer
sends request messages with ``SendMessage`` (a ``message_id`` message attribute when given;
FIFO queues with a group and a deduplication id), a reader takes what is on a queue and
deletes it. A private ``moto_server`` (``scripts/services.py``'s ``start_sqs``) restarts on the
same port: moto keeps everything in memory, so a restart forgets every queue and message
(the transport declares its queues again when it connects).

The credentials are dummies (moto accepts any): ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` are set to ``testing`` in this process (and so in the children it
starts) unless set already."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from aiobotocore.session import get_session

from noa.queues.sqs import SqsTransport
from noa.queues.transport import Endpoints, Transport

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
VISIBILITY_S = 3  # a held message not extended is delivered again this soon


def services() -> ModuleType:
    """``scripts/services.py``, imported by path (it is no package)."""
    loaded = sys.modules.get("noa_scripts_services")
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(
        "noa_scripts_services", ROOT / "scripts/services.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["noa_scripts_services"] = module
    spec.loader.exec_module(module)
    return module


def dummy_credentials() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")


class Server:
    """A private moto_server on a fixed port, started by ``scripts/services.py``."""

    def __init__(self, state: Path) -> None:
        self.started = services().Started(state)
        self.port = 0

    def start(self) -> str:
        svc = services()
        if not self.port:
            url = svc.start_sqs(self.started)
            self.port = int(url.rsplit(":", 1)[1])
            return str(url)
        binary = svc.TOOLS_VENV / "bin" / "moto_server"
        self.started.spawn("sqs", [binary, "-H", "127.0.0.1", "-p", str(self.port)])
        url = f"http://127.0.0.1:{self.port}"
        svc.wait_for(
            lambda: urllib.request.urlopen(f"{url}/moto-api/", timeout=2).status == 200,
            "sqs (moto)",
        )
        return url

    def stop(self) -> None:
        pid = self.started.pids.pop("sqs", None)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            time.sleep(0.05)
        self.started.save()


def _alive(pid: int) -> bool:
    """Whether child ``pid`` still runs (reaping it once it ended)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # reaped already (or not our child): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return done == 0


class Probe:
    kind = "sqs"

    def __init__(self, url: str, server: Server | None = None) -> None:
        dummy_credentials()
        self.url = url
        self.server = server
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._urls: dict[str, str] = {}

    def endpoints(
        self, source: str, reply_to: str, dead_letter: str, consumer: str = "noa-1"
    ) -> Endpoints:
        return Endpoints(
            url=self.url,
            source=source,
            consumer=consumer,
            reply_to=reply_to,
            dead_letter=dead_letter,
            prefetch=32,
            options={"region": REGION, "visibility_s": VISIBILITY_S},
        )

    def transport(self, endpoints: Endpoints) -> Transport:
        return SqsTransport(endpoints)

    async def client(self) -> Any:
        if self._client is None:
            stack = contextlib.AsyncExitStack()
            self._client = await stack.enter_async_context(
                get_session().create_client("sqs", region_name=REGION, endpoint_url=self.url)
            )
            self._stack = stack
        return self._client

    async def queue_url(self, name: str) -> str:
        if name not in self._urls:
            answer = await (await self.client()).get_queue_url(QueueName=name)
            self._urls[name] = answer["QueueUrl"]
        return self._urls[name]

    async def create(self, *names: str) -> None:
        client = await self.client()
        for name in names:
            fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "false"}
            answer = await client.create_queue(
                QueueName=name, Attributes=fifo if name.endswith(".fifo") else {}
            )
            self._urls[name] = answer["QueueUrl"]

    async def send(
        self,
        destination: str,
        body: bytes,
        message_id: str | None = None,
        *,
        group: str = "g",
        **attributes: str,
    ) -> None:
        """Send as a producer does (``attributes``: ``correlation_id``, ``reply_to``, ...;
        ``group``: a FIFO queue's message group)."""
        if message_id is not None:
            attributes = {"message_id": message_id, **attributes}
        extra: dict[str, str] = {}
        if destination.endswith(".fifo"):
            extra = {
                "MessageGroupId": group,
                "MessageDeduplicationId": message_id or uuid.uuid4().hex,
            }
        await (await self.client()).send_message(
            QueueUrl=await self.queue_url(destination),
            MessageBody=body.decode("utf-8"),
            MessageAttributes={
                k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
            },
            **extra,
        )

    async def send_many(self, destination: str, bodies: list[bytes]) -> None:
        """Send as a producer with many messages does: ``SendMessageBatch``es of ten (a
        standard queue; no attributes)."""
        client, url = await self.client(), await self.queue_url(destination)
        for start in range(0, len(bodies), 10):
            entries = [
                {"Id": str(i), "MessageBody": body.decode("utf-8")}
                for i, body in enumerate(bodies[start : start + 10])
            ]
            answer = await client.send_message_batch(QueueUrl=url, Entries=entries)
            if answer.get("Failed"):
                raise RuntimeError(f"SQS refused messages: {answer['Failed']}")

    async def take(self, destination: str, n: int, timeout_s: float) -> list[dict[str, Any]]:
        """The messages on ``destination`` (deleted), with their attributes."""
        client, url = await self.client(), await self.queue_url(destination)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            wait = 1 if len(out) < n and left > 1 else 0
            answer = await client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=wait,
                VisibilityTimeout=30,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            got = answer.get("Messages") or []
            if got:
                await client.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(got)
                    ],
                )
                out.extend(got)
                continue
            if len(out) >= n or time.monotonic() > deadline:
                return out
            if wait == 0:
                await asyncio.sleep(0.1)

    async def read(self, destination: str, n: int, timeout_s: float) -> list[bytes]:
        return [m["Body"].encode("utf-8") for m in await self.take(destination, n, timeout_s)]

    async def attributes(self, name: str) -> dict[str, str]:
        """Queue ``name``'s attributes (``ApproximateNumberOfMessages``, ``FifoQueue``, ...)."""
        client = await self.client()
        answer = await client.get_queue_attributes(
            QueueUrl=await self.queue_url(name), AttributeNames=["All"]
        )
        return dict(answer["Attributes"])

    async def depth(self, name: str) -> tuple[int, int]:
        """Queue ``name``'s messages (visible, in flight)."""
        found = await self.attributes(name)
        return (
            int(found["ApproximateNumberOfMessages"]),
            int(found["ApproximateNumberOfMessagesNotVisible"]),
        )

    async def delete(self, name: str) -> None:
        client = await self.client()
        await client.delete_queue(QueueUrl=await self.queue_url(name))
        self._urls.pop(name, None)

    async def _disconnect(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        self._urls.clear()
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()

    async def stop(self) -> None:
        """Stop the private moto_server (its port then refuses)."""
        assert self.server is not None, "only a private SQS stops"
        await self._disconnect()
        await asyncio.to_thread(self.server.stop)

    async def start(self) -> None:
        """Start it again on the same port: empty (no queues)."""
        assert self.server is not None, "only a private SQS starts"
        await asyncio.to_thread(self.server.start)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def close(self) -> None:
        await self._disconnect()
        if self.server is not None:
            server, self.server = self.server, None
            await asyncio.to_thread(server.stop)


async def private(tmp: Path) -> Probe:
    """A moto_server of the test's own (state and log in ``tmp``; ~1-2 s to start)."""
    dummy_credentials()
    server = Server(tmp)
    try:
        url = await asyncio.to_thread(server.start)
    except BaseException:
        server.stop()
        raise
    return Probe(url, server)
