"""NOA's HTTP/1.1 client against scripted loopback servers: body framings, keep-alive, a server
closing kept-alive connections, cancellation, malformed answers, gzip, TLS, back-pressure."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from scripted_http import Server, answer, call, fixed

from noa.providers.transport import http1
from noa.providers.transport.pool import Pool


async def test_keep_alive_reuses_one_connection_and_sends_the_request_intact(
    servers: list[Server],
) -> None:
    server = await fixed(answer(b'{"ok": true}'))
    servers.append(server)
    pool = Pool(f"http://127.0.0.1:{server.port}")
    for _ in range(5):
        assert await call(pool, b'{"a": 1}') == (200, b'{"ok": true}')
    assert server.connections == 1 and len(server.requests) == 5
    first = server.requests[0]
    assert first.startswith(b"POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Authorization: Bearer k\r\n" in first and b"Content-Length: 8\r\n" in first
    assert first.endswith(b'\r\n\r\n{"a": 1}')
    pool.close()


CHUNKED = b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest.mark.parametrize(
    ("reply", "keep"),
    [
        (b"HTTP/1.1 200 OK\r\n" + CHUNKED, True),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello world", False),  # until close
        (CONTINUE + answer(b"hello world"), True),
        (answer(gzip.compress(b"hello world"), b"Content-Encoding: gzip\r\n"), True),
    ],
)
async def test_every_body_framing(servers: list[Server], reply: bytes, keep: bool) -> None:
    server = await fixed(reply, keep)
    servers.append(server)
    pool = Pool(f"http://127.0.0.1:{server.port}")
    assert await call(pool) == (200, b"hello world")
    assert await call(pool) == (200, b"hello world")
    assert server.connections == (1 if keep else 2)
    pool.close()


async def test_connection_close_is_honoured(servers: list[Server]) -> None:
    server = await fixed(answer(b"x", b"Connection: close\r\n"), keep=True)
    servers.append(server)
    pool = Pool(f"http://127.0.0.1:{server.port}")
    for _ in range(3):
        assert await call(pool) == (200, b"x")
    assert server.connections == 3
    pool.close()


async def test_a_kept_alive_connection_the_server_dropped_is_replaced_once(
    servers: list[Server],
) -> None:
    """The keep-alive race: the server closes an idle connection as the next request goes out.
    The request never reached it, so it is sent again on a fresh connection, once."""
    answered = 0

    async def handler(
        request: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> bool:
        nonlocal answered
        if answered and server.connections == 1:  # the second request on the first connection
            return False  # closed without a word
        answered += 1
        w.write(answer(b"ok"))
        await w.drain()
        return True

    server = await Server(handler).start()
    servers.append(server)
    pool = Pool(f"http://127.0.0.1:{server.port}")
    assert await call(pool) == (200, b"ok")
    assert await call(pool) == (200, b"ok")
    assert server.connections == 2 and len(server.requests) == 3
    pool.close()

    async def always_silent(
        request: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> bool:
        return False

    silent = await Server(always_silent).start()
    servers.append(silent)
    fresh = Pool(f"http://127.0.0.1:{silent.port}")
    with pytest.raises(http1.ConnectionClosed):  # a fresh connection is never retried
        await call(fresh)
    assert len(silent.requests) == 1
    fresh.close()


async def test_an_abandoned_response_never_goes_back_to_the_pool(servers: list[Server]) -> None:
    release = asyncio.Event()

    async def slow(request: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        await w.drain()
        await release.wait()
        w.write(b"world")
        await w.drain()
        return True

    server = await Server(slow).start()
    servers.append(server)
    pool = Pool(f"http://127.0.0.1:{server.port}")
    task = asyncio.create_task(call(pool))
    await asyncio.sleep(0.05)  # the first half is in
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    assert await call(pool) == (200, b"helloworld")
    assert server.connections == 2  # the half-read connection was dropped, not reused
    pool.close()


@pytest.mark.parametrize(
    "reply",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\ntoo short",  # then the server closes
        answer(b"x", b"Content-Encoding: br\r\n"),
    ],
)
async def test_malformed_answers_are_connection_errors(servers: list[Server], reply: bytes) -> None:
    server = await fixed(reply, keep=False)
    servers.append(server)
    pool = Pool(f"http://127.0.0.1:{server.port}")
    with pytest.raises(ConnectionError):
        await call(pool)
    pool.close()


async def test_a_slow_reader_pauses_the_socket_and_still_gets_every_byte(
    servers: list[Server],
) -> None:
    size = 5 * http1.MAX_BUFFERED
    server = await fixed(answer(b"z" * size))
    servers.append(server)
    pool = Pool(f"http://127.0.0.1:{server.port}")
    head = http1.request_head("GET", "/big", pool.host_header, {})
    response = await pool.request(head + b"\r\n")
    await asyncio.sleep(0.2)  # let the server push while nobody reads
    assert response._buffered <= http1.MAX_BUFFERED + 262144  # paused, not buffering it all
    total = 0
    async for chunk in response.chunks(idle_timeout_s=5):
        total += len(chunk)
    assert total == size
    pool.close()


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        http1.request_head("POST", "/v1/x", "h", {"Authorization": "Bearer k\r\nX-Evil: 1"})
    with pytest.raises(ValueError, match="not an http"):
        Pool("ftp://example.com")


def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_with_verification(servers: list[Server], tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def handler(
        request: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> bool:
        w.write(answer(b"secure"))
        await w.drain()
        return True

    server = await Server(handler).start(server_context)
    servers.append(server)
    trusting = ssl.create_default_context(cafile=str(cert))
    pool = Pool(f"https://localhost:{server.port}", ssl_context=trusting)
    assert await call(pool) == (200, b"secure")
    assert await call(pool) == (200, b"secure")
    assert server.connections == 1
    pool.close()
    untrusting = Pool(f"https://localhost:{server.port}")  # the system's CAs only
    with pytest.raises(ssl.SSLError):
        await call(untrusting)
    untrusting.close()
