"""The upstream client's bounds against scripted loopback servers: connections per origin capped
(the requests beyond wait their turn), and heads, bodies and SSE lines larger than the limits,
gzip and deflate bombs included, refused cleanly (a 502 through the direct transport)."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import pytest
from scripted_http import Server, answer, call, fixed

from noa.errors import UpstreamTooLargeError
from noa.providers.transport import http1
from noa.providers.transport.direct import DirectTransport
from noa.providers.transport.pool import Pool

LIMIT = 256 << 10


def chunked(body: bytes, size: int = 65536) -> bytes:
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(parts) + b"0\r\n\r\n"


async def test_connections_per_origin_are_capped_and_the_rest_wait_their_turn(
    servers: list[Server],
) -> None:
    gate, three = asyncio.Event(), asyncio.Event()
    busiest = 0

    async def held(request: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        nonlocal busiest
        busiest = max(busiest, pool.connections)
        if len(server.requests) == 3:
            three.set()
        await gate.wait()
        w.write(answer(b"ok"))
        await w.drain()
        return True

    server = await Server(held).start()
    servers.append(server)
    pool = Pool(f"http://127.0.0.1:{server.port}", max_connections=3)
    calls = [asyncio.create_task(call(pool)) for _ in range(10)]
    async with asyncio.timeout(5):
        await three.wait()
    for _ in range(50):  # every chance for the other seven to open connections of their own
        await asyncio.sleep(0)
    assert server.connections == 3 and pool.connections == 3 and len(server.requests) == 3
    calls[-1].cancel()  # a caller that gives up leaves the queue without taking a turn
    gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[:9] == [(200, b"ok")] * 9 and isinstance(results[9], asyncio.CancelledError)
    assert server.connections == 3 and len(server.requests) == 9 and busiest == 3
    assert pool.connections == 3 and not pool._waiters
    pool.close()


async def test_a_closed_connection_frees_its_place_for_the_next_waiter(
    servers: list[Server],
) -> None:
    busiest = 0

    async def closing(request: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        nonlocal busiest
        busiest = max(busiest, pool.connections)
        await asyncio.sleep(0.005)
        w.write(answer(b"bye", b"Connection: close\r\n"))
        await w.drain()
        return False

    server = await Server(closing).start()
    servers.append(server)
    pool = Pool(f"http://127.0.0.1:{server.port}", max_connections=2)
    results = await asyncio.gather(*(call(pool) for _ in range(6)))
    assert results == [(200, b"bye")] * 6
    assert server.connections == 6 and busiest <= 2
    assert pool.connections == 0  # each closed as its answer ended
    pool.close()


async def test_a_refused_connection_frees_its_place() -> None:
    pool = Pool("http://127.0.0.1:1", max_connections=1)  # nothing listens on port 1
    for _ in range(3):
        with pytest.raises(OSError):
            await call(pool)
    assert pool.connections == 0


@pytest.mark.parametrize(
    "reply",
    [
        answer(b"x" * (LIMIT + 1)),  # refused from its Content-Length
        b"HTTP/1.1 200 OK\r\n" + chunked(b"x" * (LIMIT + 1)),  # counted as it comes
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * (LIMIT + 1),  # until close
    ],
)
async def test_a_body_over_the_limit_is_refused(servers: list[Server], reply: bytes) -> None:
    server = await fixed(reply, keep=False)
    servers.append(server)
    pool = Pool(f"http://127.0.0.1:{server.port}", max_body_bytes=LIMIT)
    with pytest.raises(http1.ResponseTooLarge, match=f"more than the {LIMIT} bytes"):
        await call(pool)
    assert pool.connections == 0  # the connection went with it
    pool.close()


async def test_a_gzip_bomb_is_cut_at_the_default_limit_not_inflated(
    servers: list[Server],
) -> None:
    bomb = gzip.compress(bytes(http1.MAX_BODY_BYTES + (16 << 20)), compresslevel=9)
    assert len(bomb) < 200_000  # about 80 MB once inflated
    server = await fixed(answer(bomb, b"Content-Encoding: gzip\r\n"))
    servers.append(server)
    pool = Pool(f"http://127.0.0.1:{server.port}")
    head = http1.request_head("GET", "/bomb", pool.host_header, {})
    response = await pool.request(head + b"\r\n")
    with pytest.raises(http1.ResponseTooLarge, match="decompressed"):
        await response.read()
    assert response._buffered <= http1.MAX_BODY_BYTES
    pool.close()


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_answer_is_bounded_once_inflated_even_when_streamed(
    servers: list[Server], encoding: str
) -> None:
    data = bytes(LIMIT * 8)
    packed = gzip.compress(data) if encoding == "gzip" else zlib.compress(data)
    server = await fixed(answer(packed, b"Content-Encoding: %s\r\n" % encoding.encode()))
    servers.append(server)
    pool = Pool(f"http://127.0.0.1:{server.port}", max_body_bytes=LIMIT)
    head = http1.request_head("GET", "/bomb", pool.host_header, {})
    response = await pool.request(head + b"\r\n")
    await asyncio.sleep(0.05)  # nobody reads: what waits is bounded too
    assert response._buffered <= LIMIT
    with pytest.raises(http1.ResponseTooLarge, match="decompressed"):
        async for _ in response.chunks(idle_timeout_s=5):
            pass
    small = await fixed(answer(gzip.compress(b"fits"), b"Content-Encoding: gzip\r\n"))
    servers.append(small)
    fine = Pool(f"http://127.0.0.1:{small.port}", max_body_bytes=LIMIT)
    assert await call(fine) == (200, b"fits")
    pool.close()
    fine.close()


@pytest.mark.parametrize("ended", [True, False])
async def test_a_head_over_the_limit_is_refused(servers: list[Server], ended: bool) -> None:
    big = b"X-Big: " + b"a" * (http1.MAX_HEAD_BYTES + 10)
    reply = b"HTTP/1.1 200 OK\r\n" + big + (b"\r\nContent-Length: 0\r\n\r\n" if ended else b"")
    server = await fixed(reply, keep=ended)
    servers.append(server)
    pool = Pool(f"http://127.0.0.1:{server.port}")
    with pytest.raises(http1.ResponseTooLarge, match="head"):
        await call(pool)
    pool.close()


async def test_the_direct_transport_answers_a_bomb_or_an_endless_line_with_a_502(
    servers: list[Server],
) -> None:
    bomb = gzip.compress(bytes(LIMIT * 4))
    json_server = await fixed(answer(bomb, b"Content-Encoding: gzip\r\n"))
    line = b"data: " + b"x" * (LIMIT * 2)  # one SSE line that never ends
    sse = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" + chunked(line)[:-5]
    sse_server = await fixed(sse)
    servers.extend([json_server, sse_server])
    transport = DirectTransport(
        "up", f"http://127.0.0.1:{json_server.port}/v1", {}, 5, max_body_bytes=LIMIT
    )
    with pytest.raises(UpstreamTooLargeError) as refused:
        await transport.post_json("/chat/completions", {"model": "m"})
    error = refused.value
    assert error.status_code == 502 and error.code == "upstream_response_too_large"
    assert not error.retryable and "too large" in error.message
    await transport.aclose()
    streaming = DirectTransport(
        "up", f"http://127.0.0.1:{sse_server.port}/v1", {}, 5, max_body_bytes=LIMIT
    )
    with pytest.raises(UpstreamTooLargeError, match="a line"):
        async for _ in streaming.stream("/chat/completions", {"model": "m", "stream": True}):
            pass
    await streaming.aclose()
