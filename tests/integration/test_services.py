"""The private services ./scripts/test.sh starts answer their own protocols.

Later features (cache, limits, storage, queues) test against these same instances; this checks
the harness itself, with nothing but sockets and the psql client.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import urllib.parse
import urllib.request

import pytest


def service(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite through ./scripts/test.sh")
    return value


def _host_port(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlparse(url if "://" in url else f"tcp://{url}")
    return parsed.hostname or "127.0.0.1", int(parsed.port or 0)


def _exchange(url: str, payload: bytes, size: int = 4096) -> bytes:
    with socket.create_connection(_host_port(url), timeout=5) as s:
        s.sendall(payload)
        return s.recv(size)


def test_redis_answers_ping() -> None:
    assert _exchange(service("NOA_TEST_REDIS_URL"), b"PING\r\n") == b"+PONG\r\n"


def test_postgres_runs_queries() -> None:
    out = subprocess.run(
        ["psql", service("NOA_TEST_POSTGRES_DSN"), "-tAc", "select 40 + 2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.stdout.strip() == "42", out.stderr


def test_rabbitmq_speaks_amqp() -> None:
    frame = _exchange(service("NOA_TEST_RABBITMQ_URL"), b"AMQP\x00\x00\x09\x01")
    assert frame[0] == 1  # a METHOD frame: connection.start
    assert struct.unpack(">HH", frame[7:11]) == (10, 10)


def test_kafka_answers_api_versions() -> None:
    client = b"noa-test"
    body = struct.pack(">hhih", 18, 0, 7, len(client)) + client  # ApiVersions v0
    response = _exchange(service("NOA_TEST_KAFKA_BOOTSTRAP"), struct.pack(">i", len(body)) + body)
    size, correlation, error = struct.unpack(">iih", response[:10])
    assert size > 0 and correlation == 7 and error == 0


def test_sqs_lists_queues() -> None:
    data = urllib.parse.urlencode({"Action": "ListQueues", "Version": "2012-11-05"}).encode()
    request = urllib.request.Request(
        service("NOA_TEST_SQS_ENDPOINT"),
        data=data,
        headers={
            "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request,"
            " SignedHeaders=host, Signature=x",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert b"ListQueues" in response.read()
