"""The direct transport: JSON and SSE over NOA's own keep-alive HTTP/1.1 pool (``pool.py``,
``http1.py``), with the URL and headers the official SDK client would send (see
``transport/__init__.py``). An answer larger than ``max_body_bytes`` (a JSON body, an SSE line,
either once decompressed) is an ``UpstreamTooLargeError``, never a process out of memory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

import noa
from noa.errors import (
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamTooLargeError,
    error_for_upstream_status,
    parse_retry_after,
    upstream_message,
)
from noa.providers.base import Body
from noa.providers.transport.http1 import (
    MAX_BODY_BYTES,
    Response,
    ResponseTooLarge,
    request_head,
    with_body,
)
from noa.providers.transport.pool import MAX_CONNECTIONS, Pool
from noa.wire import sse

# Headers that describe the SDK's own runtime, not the request: never sent by the direct path.
_SDK_RUNTIME_HEADERS = ("user-agent", "x-stainless-")


class Transport(Protocol):
    async def post_json(self, path: str, body: Body) -> Body: ...

    def stream(self, path: str, body: Body) -> AsyncGenerator[str, None]:
        """The ``data`` payloads of the SSE events the upstream sends back."""
        ...

    async def get_json(self, path: str) -> Body: ...

    async def aclose(self) -> None: ...


def parse_object(content: bytes, provider: str) -> Body:
    """An upstream's JSON object, or an UpstreamError saying it was malformed."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError as e:
        raise UpstreamError(
            f"provider '{provider}' sent a malformed reply: {e}", provider=provider
        ) from e
    if not isinstance(body, dict):
        raise UpstreamError(f"provider '{provider}' sent a non-object reply", provider=provider)
    return body


def sdk_request_headers(client: Any) -> dict[str, str]:
    """The SDK client's auth and protocol headers (anthropic-version, organization, ...)."""
    headers: dict[str, str] = {}
    for source in (client.default_headers, client.auth_headers):
        for key, value in source.items():
            if isinstance(value, str) and not key.lower().startswith(_SDK_RUNTIME_HEADERS):
                headers[key] = value
    headers["User-Agent"] = f"noa/{noa.__version__}"
    return headers


class DirectTransport:
    """JSON and SSE over NOA's own keep-alive HTTP/1.1 pool (``pool.py``), one per event loop
    (created on first use), of at most ``max_connections`` to the upstream."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        timeout_s: float,
        *,
        max_connections: int = MAX_CONNECTIONS,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.provider = provider
        parts = urlsplit(base_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Accept-Encoding": "gzip, deflate", **headers}
        self._timeout_s = timeout_s
        self._connect_s = min(timeout_s, 30)
        self._max_connections = max_connections
        self._max_body = max_body_bytes
        self._pool: Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heads: dict[tuple[str, str], bytes] = {}
        self._head("POST", "/chat/completions")  # a bad URL or header fails at start-up

    @classmethod
    def from_sdk_client(
        cls, provider: str, client: Any, timeout_s: float, **limits: int
    ) -> DirectTransport:
        """``limits``: ``max_connections``, ``max_body_bytes``."""
        return cls(provider, str(client.base_url), sdk_request_headers(client), timeout_s, **limits)

    def _new_pool(self) -> Pool:
        return Pool(
            self._origin,
            connect_timeout_s=self._connect_s,
            max_connections=self._max_connections,
            max_body_bytes=self._max_body,
        )

    def _head(self, method: str, path: str) -> bytes:
        head = self._heads.get((method, path))
        if head is None:
            if self._pool is None:
                self._pool = self._new_pool()
            target = f"{self._prefix}/{path.lstrip('/')}"
            head = request_head(method, target, self._pool.host_header, self._headers)
            self._heads[(method, path)] = head
        return head

    def _client(self) -> Pool:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._loop is not loop:
            if self._pool is not None and self._loop is not None and not self._loop.is_closed():
                self._pool.close()
            self._pool = self._new_pool()
            self._loop = loop
        return self._pool

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        name = self.provider
        try:
            yield
        except TimeoutError as e:
            raise UpstreamTimeoutError(f"provider '{name}' timed out", provider=name) from e
        except ResponseTooLarge as e:
            raise UpstreamTooLargeError(
                f"provider '{name}' sent too large an answer ({e})", provider=name
            ) from e
        except (OSError, ValueError) as e:  # refused, reset, TLS, DNS, a malformed response
            raise UpstreamError(
                f"provider '{name}' could not be reached: {e}", provider=name
            ) from e

    async def _send(self, method: str, path: str, body: bytes | None) -> Response:
        head = self._head(method, path)
        pool = self._client()
        if body is None:
            return await pool.request(head + b"\r\n")
        return await pool.request(with_body(head, body), body)

    async def _raise_for_status(self, response: Response) -> None:
        if response.status < 400:
            return
        content = await response.read()
        try:
            body: Any = orjson.loads(content)
        except orjson.JSONDecodeError:
            body = None
        text = content.decode("utf-8", "replace")[:500] or response.reason or ""
        raise error_for_upstream_status(
            response.status,
            upstream_message(body, f"HTTP {response.status}: {text}"),
            provider=self.provider,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )

    async def _json(self, method: str, path: str, body: bytes | None) -> Body:
        """One JSON exchange, bounded as a whole by the timeout."""
        with self._errors():
            async with asyncio.timeout(self._timeout_s):
                response = await self._send(method, path, body)
                try:
                    await self._raise_for_status(response)
                    content = await response.read()
                finally:
                    response.close()
        return parse_object(content, self.provider)

    async def post_json(self, path: str, body: Body) -> Body:
        return await self._json("POST", path, _dumps(body))

    async def stream(self, path: str, body: Body) -> AsyncGenerator[str, None]:
        # Streams may last longer than any total: bound the silence between reads instead.
        with self._errors():
            async with asyncio.timeout(self._timeout_s):
                response = await self._send("POST", path, _dumps(body))
            try:
                await self._raise_for_status(response)
                chunks = response.chunks(self._timeout_s)
                lines = _lines(chunks, self._max_body)
                async with contextlib.aclosing(sse.iter_data(lines)) as events:
                    async for data in events:
                        yield data
            finally:
                response.close()

    async def get_json(self, path: str) -> Body:
        return await self._json("GET", path, None)

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


async def _lines(chunks: AsyncIterator[bytes], max_bytes: int) -> AsyncGenerator[str, None]:
    """Lines of the body as they arrive, each at most ``max_bytes`` long."""
    buffer = bytearray()
    async with contextlib.aclosing(chunks):  # type: ignore[type-var]
        async for chunk in chunks:
            searched = len(buffer)
            buffer += chunk
            while (end := buffer.find(b"\n", searched)) >= 0:
                yield buffer[:end].rstrip(b"\r").decode("utf-8")
                del buffer[: end + 1]
                searched = 0
            if len(buffer) > max_bytes:
                raise ResponseTooLarge(f"a line: more than the {max_bytes} bytes read")
    if buffer:
        yield buffer.rstrip(b"\r").decode("utf-8")
