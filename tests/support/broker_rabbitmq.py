"""The outside view of RabbitMQ for the bridge tests (``brokers.BrokerProbe``): a producer
publishes persistent messages to durable queues through the default exchange (with publisher
confirms), a reader takes what is on a queue with ``basic.get`` and acknowledges it. A private
node (``scripts/services.py``'s ``start_rabbitmq``) restarts with ``stop_app`` / ``start_app``:
the Erlang node stays up, the AMQP listener closes and opens again on the same port, durable
queues and persistent messages are recovered from disk."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from noa.queues.rabbitmq import RabbitMqTransport
from noa.queues.transport import Endpoints, Transport

ROOT = Path(__file__).resolve().parents[2]
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"


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


class Node:
    """A private RabbitMQ node, driven with ``rabbitmqctl`` (its environment: HOME, cookie)."""

    def __init__(self, name: str, env: dict[str, str], port: int) -> None:
        self.name, self.env, self.port = name, env, port

    def ctl(self, *args: str, timeout_s: float = 60) -> None:
        subprocess.run(
            [RABBITMQCTL, "-n", self.name, *args],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=timeout_s,
        )

    def listening(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def start_app(self) -> None:
        self.ctl("start_app")
        deadline = time.monotonic() + 60
        while not self.listening():
            if time.monotonic() > deadline:
                raise RuntimeError("the private RabbitMQ did not listen again within 60 s")
            time.sleep(0.05)

    def stop(self) -> None:
        try:
            self.ctl("stop")
        except (subprocess.SubprocessError, OSError):
            pid_file = Path(self.env["RABBITMQ_PID_FILE"])
            if pid_file.exists():  # the node did not answer: end it by its own PID
                subprocess.run(["kill", "-9", pid_file.read_text().strip()], capture_output=True)
        # epmd serves every Erlang node here (the suite's shared RabbitMQ too): stop it only
        # if no node is left registered
        names = subprocess.run(["epmd", "-names"], capture_output=True, text=True).stdout
        if "name " not in names:
            subprocess.run(["epmd", "-kill"], capture_output=True)


class Probe:
    kind = "rabbitmq"

    def __init__(self, url: str, node: Node | None = None) -> None:
        self.url = url
        self.node = node
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None

    def endpoints(
        self, source: str, reply_to: str, dead_letter: str, consumer: str = "noa-1"
    ) -> Endpoints:
        return Endpoints(
            url=self.url,
            source=source,
            consumer=consumer,
            reply_to=reply_to,
            dead_letter=dead_letter,
            prefetch=16,
        )

    def transport(self, endpoints: Endpoints) -> Transport:
        return RabbitMqTransport(endpoints)

    async def channel(self) -> AbstractChannel:
        """The probe's own confirming channel (opened again after a restart)."""
        if self._channel is None or self._channel.is_closed:
            if self._connection is None or self._connection.is_closed:
                self._connection = await aio_pika.connect(self.url, timeout=10)
            self._channel = await self._connection.channel(publisher_confirms=True)
        return self._channel

    async def create(self, *names: str) -> None:
        channel = await self.channel()
        for name in names:
            await channel.declare_queue(name, durable=True)

    async def send(
        self,
        destination: str,
        body: bytes,
        message_id: str | None = None,
        **properties: Any,
    ) -> None:
        """Publish as a producer does (``properties``: ``correlation_id``, ``reply_to``, ...)."""
        channel = await self.channel()
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            message_id=message_id,
            **properties,
        )
        await channel.default_exchange.publish(message, routing_key=destination, mandatory=True)

    async def take(self, destination: str, n: int, timeout_s: float) -> list[Any]:
        """The messages on ``destination`` (acknowledged), with their properties."""
        channel = await self.channel()
        queue = await channel.declare_queue(destination, passive=True)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while True:
            message = await queue.get(no_ack=False, fail=False, timeout=10)
            if message is not None:
                await message.ack()
                out.append(message)
                continue
            if len(out) >= n or time.monotonic() > deadline:
                return out
            await asyncio.sleep(0.005)  # (a message waited for is seen within a few ms)

    async def consume(self, destination: str, n: int, timeout_s: float) -> list[bytes]:
        """Up to ``n`` messages from ``destination`` as a consumer of many takes them: pushed
        by the broker (``basic.consume``, 1,000 unacknowledged at most), acknowledged as they
        come; returns once ``n`` came or ``timeout_s`` passed (the benchmark's reader)."""
        connection = self._connection
        if connection is None or connection.is_closed:
            await self.channel()
            connection = self._connection
        assert connection is not None
        channel = await connection.channel()
        try:
            await channel.set_qos(prefetch_count=1000)
            queue = await channel.declare_queue(destination, passive=True)
            out: list[bytes] = []
            done = asyncio.Event()

            async def take(message: AbstractIncomingMessage) -> None:
                if len(out) >= n:
                    await message.nack(requeue=True)  # (one more than asked: left there)
                    return
                out.append(message.body)
                await message.ack()
                if len(out) >= n:
                    done.set()

            tag = await queue.consume(take)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout_s)
            await queue.cancel(tag)
            return out
        finally:
            await channel.close()

    async def read(self, destination: str, n: int, timeout_s: float) -> list[bytes]:
        return [message.body for message in await self.take(destination, n, timeout_s)]

    async def depth(self, name: str) -> int:
        """Messages ready on queue ``name``."""
        channel = await self.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)

    async def delete(self, name: str) -> None:
        channel = await self.channel()
        await channel.queue_delete(name)

    async def _disconnect(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):  # the broker went away first
                await connection.close()

    async def stop(self) -> None:
        """Stop the private broker's AMQP side (``stop_app``): connections close, the port
        refuses; the node keeps its data."""
        assert self.node is not None, "only a private RabbitMQ stops"
        await self._disconnect()
        await asyncio.to_thread(self.node.ctl, "stop_app")

    async def start(self) -> None:
        assert self.node is not None, "only a private RabbitMQ starts"
        await asyncio.to_thread(self.node.start_app)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def close(self) -> None:
        await self._disconnect()
        if self.node is not None:
            node, self.node = self.node, None
            await asyncio.to_thread(node.stop)


async def private(tmp: Path) -> Probe:
    """A RabbitMQ node of the test's own in ``tmp`` (~3-5 s to start)."""
    svc = services()
    started = svc.Started(tmp)
    try:
        url = await asyncio.to_thread(svc.start_rabbitmq, started)
    except BaseException:
        if (tmp / "rabbitmq.env").exists():  # it was spawned: stop it
            env = json.loads((tmp / "rabbitmq.env").read_text())
            Node(env["RABBITMQ_NODENAME"], env, int(env["RABBITMQ_NODE_PORT"])).stop()
        raise
    env = json.loads((tmp / "rabbitmq.env").read_text())
    return Probe(url, Node(env["RABBITMQ_NODENAME"], env, int(env["RABBITMQ_NODE_PORT"])))
