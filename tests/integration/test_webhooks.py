"""Webhook deliveries to a real receiver on loopback (allowlisted): the receiver verifies the
signatures with ``standardwebhooks`` and the ``openai`` SDK; retries, permanent failures,
redirects and the SSRF guard as a sender meets them. No test waits for a backoff: the sleep is
injected and records what it was asked."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from scripted_http import Server
from standardwebhooks.webhooks import Webhook

from noa.jobs.webhook_signing import WebhookSecret
from noa.jobs.webhooks import WebhookSender, backoff_delay

EVENT = {
    "id": "evt_1",
    "object": "event",
    "created_at": 1_700_000_000,
    "type": "batch.completed",
    "data": {"id": "batch_1"},
}
LOOPBACK = ["127.0.0.0/8"]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each request with the next scripted reply (the last one repeats)."""

    replies: list[bytes]
    received: list[Received] = field(default_factory=list)
    delay_s: float = 0.0

    async def handle(
        self, request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        head, _, body = request.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.received.append(Received(lines[0].split(" ")[1], headers, body))
        if self.delay_s:  # slow: answer late, or not at all once the client hangs up
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(), self.delay_s)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        writer.write(reply)
        await writer.drain()
        return False


def reply(status: int, extra: str = "") -> bytes:
    body = b'{"ok": true}'
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


class Sleeps:
    def __init__(self) -> None:
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(round(seconds, 4))


@pytest.fixture
def secret() -> WebhookSecret:
    return WebhookSecret.generate()


async def receiver(
    servers: list[Server], *replies: bytes, delay_s: float = 0.0
) -> tuple[Receiver, int]:
    scripted = Receiver(list(replies), delay_s=delay_s)
    server = await Server(scripted.handle).start()
    servers.append(server)
    return scripted, server.port


def sender(secret: WebhookSecret, sleeps: Sleeps, **kwargs: object) -> WebhookSender:
    options: dict[str, object] = {"allow": LOOPBACK, "sleep": sleeps, "rng": lambda: 0.5}
    return WebhookSender([secret], **{**options, **kwargs})  # type: ignore[arg-type]


async def test_a_delivery_the_receiver_verifies(
    servers: list[Server], secret: WebhookSecret
) -> None:
    scripted, port = await receiver(servers, reply(200))
    sleeps = Sleeps()
    delivery = await sender(secret, sleeps).deliver(
        f"http://127.0.0.1:{port}/hooks/noa?tenant=a", EVENT, msg_id="msg_ok"
    )
    assert delivery.delivered and delivery.outcome == "delivered" and delivery.error is None
    [attempt] = delivery.attempts
    assert attempt.status_code == 200 and attempt.error is None and attempt.duration_ms >= 0
    assert abs(attempt.at - time.time()) < 60
    [got] = scripted.received
    assert got.path == "/hooks/noa?tenant=a"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["host"] == f"127.0.0.1:{port}"
    assert got.headers["webhook-id"] == "msg_ok"
    assert Webhook(str(secret)).verify(got.body, got.headers) == EVENT
    event = openai.OpenAI(api_key="x", webhook_secret=str(secret)).webhooks.unwrap(
        got.body, got.headers
    )
    assert event.type == "batch.completed"
    assert sleeps.slept == []


async def test_a_name_is_pinned_to_its_checked_address(
    servers: list[Server], secret: WebhookSecret
) -> None:
    scripted, port = await receiver(servers, reply(204))
    resolved: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    delivery = await sender(secret, Sleeps(), resolve=resolve).deliver(
        f"http://hooks.test:{port}/in", b'{"a": 1}', msg_id="msg_pin"
    )
    assert delivery.delivered and resolved == ["hooks.test"]
    assert scripted.received[0].headers["host"] == f"hooks.test:{port}"
    Webhook(str(secret)).verify(scripted.received[0].body, scripted.received[0].headers)


async def test_a_500_then_a_200_is_retried_with_backoff(
    servers: list[Server], secret: WebhookSecret
) -> None:
    scripted, port = await receiver(servers, reply(500), reply(503), reply(200))
    sleeps = Sleeps()
    delivery = await sender(secret, sleeps, backoff_base_s=2.0).deliver(
        f"http://127.0.0.1:{port}/", EVENT, msg_id="msg_retry"
    )
    assert delivery.delivered
    assert [a.status_code for a in delivery.attempts] == [500, 503, 200]
    assert [a.error for a in delivery.attempts] == [
        "the receiver answered 500",
        "the receiver answered 503",
        None,
    ]
    assert sleeps.slept == [2.3, 4.6]  # 2 * 2**n * (1 + 0.3 * 0.5)
    assert len(scripted.received) == 3
    ids = {r.headers["webhook-id"] for r in scripted.received}
    assert ids == {"msg_retry"}  # the same event each time, signed afresh
    for got in scripted.received:
        Webhook(str(secret)).verify(got.body, got.headers)


async def test_retries_stop_at_max_attempts(servers: list[Server], secret: WebhookSecret) -> None:
    _, port = await receiver(servers, reply(429, "Retry-After: 7\r\n"), reply(408))
    sleeps = Sleeps()
    delivery = await sender(secret, sleeps, max_attempts=3).deliver(
        f"http://127.0.0.1:{port}/", EVENT, msg_id="msg_many"
    )
    assert delivery.outcome == "exhausted" and not delivery.delivered
    assert [a.status_code for a in delivery.attempts] == [429, 408, 408]
    assert delivery.error == "the receiver answered 408"
    assert sleeps.slept == [7.0, 2.3]  # the 429's Retry-After, then the backoff


async def test_a_400_is_not_retried(servers: list[Server], secret: WebhookSecret) -> None:
    scripted, port = await receiver(servers, reply(400), reply(200))
    sleeps = Sleeps()
    delivery = await sender(secret, sleeps).deliver(
        f"http://127.0.0.1:{port}/", EVENT, msg_id="msg_400"
    )
    assert delivery.outcome == "failed"
    assert [a.status_code for a in delivery.attempts] == [400]
    assert len(scripted.received) == 1 and sleeps.slept == []


async def test_connection_errors_and_timeouts_are_retried(
    servers: list[Server], secret: WebhookSecret
) -> None:
    closed = await Server(Receiver([reply(200)]).handle).start()
    port = closed.port
    await closed.stop()  # nothing listens there now
    sleeps = Sleeps()
    delivery = await sender(secret, sleeps, max_attempts=3).deliver(
        f"http://127.0.0.1:{port}/", EVENT, msg_id="msg_refused"
    )
    assert delivery.outcome == "exhausted"
    assert all(
        a.status_code is None and "could not connect" in (a.error or "") for a in delivery.attempts
    )
    assert sleeps.slept == [1.15, 2.3]

    _, port = await receiver(servers, reply(200), delay_s=1.0)
    delivery = await sender(secret, Sleeps(), max_attempts=2, timeout_s=0.2).deliver(
        f"http://127.0.0.1:{port}/", EVENT, msg_id="msg_slow"
    )
    assert delivery.outcome == "exhausted"
    assert [a.error for a in delivery.attempts] == ["timed out after 0.2 s"] * 2
    assert all(a.duration_ms < 1000 for a in delivery.attempts)


async def test_a_redirect_is_followed_to_a_checked_target(
    servers: list[Server], secret: WebhookSecret
) -> None:
    final, final_port = await receiver(servers, reply(200))
    _, port = await receiver(
        servers, reply(308, f"Location: http://127.0.0.1:{final_port}/moved\r\n")
    )
    delivery = await sender(secret, Sleeps()).deliver(
        f"http://127.0.0.1:{port}/old", EVENT, msg_id="msg_moved"
    )
    assert delivery.delivered and [a.status_code for a in delivery.attempts] == [200]
    assert final.received[0].path == "/moved"
    Webhook(str(secret)).verify(final.received[0].body, final.received[0].headers)


async def test_a_redirect_to_a_private_address_is_refused(
    servers: list[Server], secret: WebhookSecret
) -> None:
    scripted, port = await receiver(
        servers, reply(302, "Location: http://169.254.169.254/latest/meta-data\r\n")
    )
    sleeps = Sleeps()
    delivery = await sender(secret, sleeps).deliver(
        f"http://127.0.0.1:{port}/", EVENT, msg_id="msg_ssrf"
    )
    assert delivery.outcome == "failed" and len(scripted.received) == 1
    [attempt] = delivery.attempts
    assert "link-local" in (attempt.error or "") and "after a redirect" in (attempt.error or "")
    assert sleeps.slept == []


async def test_too_many_redirects_fail(servers: list[Server], secret: WebhookSecret) -> None:
    scripted, port = await receiver(servers, reply(307, "Location: /again\r\n"))
    delivery = await sender(secret, Sleeps()).deliver(
        f"http://127.0.0.1:{port}/", EVENT, msg_id="msg_loop"
    )
    assert delivery.outcome == "failed" and delivery.error == "more than 3 redirects"
    assert len(scripted.received) == 4  # the first request and three redirects


async def test_loopback_without_the_allowlist_is_refused_before_connecting(
    servers: list[Server], secret: WebhookSecret
) -> None:
    scripted, port = await receiver(servers, reply(200))
    sleeps = Sleeps()
    for url in (f"http://127.0.0.1:{port}/", f"http://localhost:{port}/"):
        delivery = await sender(secret, sleeps, allow=()).deliver(url, EVENT, msg_id="msg_lo")
        assert delivery.outcome == "failed"
        [attempt] = delivery.attempts
        assert attempt.status_code is None and "loopback" in (attempt.error or "")
    assert scripted.received == [] and sleeps.slept == []


def _certificate(directory: Path, name: str) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / "bundle.pem"
    path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


async def test_https_to_a_pinned_address_checks_the_name(
    servers: list[Server], secret: WebhookSecret, tmp_path: Path
) -> None:
    bundle = _certificate(tmp_path, "hooks.test")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(bundle)
    scripted = Receiver([reply(200)])
    server = await Server(scripted.handle).start(server_context)
    servers.append(server)

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    trusting = ssl.create_default_context(cafile=str(bundle))
    ok = await sender(secret, Sleeps(), resolve=resolve, ssl_context=trusting).deliver(
        f"https://hooks.test:{server.port}/", EVENT, msg_id="msg_tls"
    )
    assert ok.delivered and scripted.received[0].headers["host"] == f"hooks.test:{server.port}"
    # the same address by another name: the certificate does not match, nothing is sent
    wrong = await sender(
        secret, Sleeps(), resolve=resolve, ssl_context=trusting, max_attempts=1
    ).deliver(f"https://other.test:{server.port}/", EVENT, msg_id="msg_tls2")
    assert wrong.outcome == "exhausted" and "certificate" in (wrong.error or "").lower()
    assert len(scripted.received) == 1


def test_backoff_is_capped_and_jittered() -> None:
    assert backoff_delay(0, base_s=1, cap_s=300, rng=lambda: 0.0) == 1
    assert backoff_delay(3, base_s=1, cap_s=300, rng=lambda: 0.999) == pytest.approx(10.3976)
    assert backoff_delay(20, base_s=1, cap_s=300, rng=lambda: 0.5) == 300
    assert backoff_delay(10_000, base_s=1, cap_s=300, rng=lambda: 0.5) == 300
