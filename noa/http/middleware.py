"""One pure-ASGI middleware for what every request needs before routing.

Correlation id (accepted or generated, echoed as a header), master-key auth on protected
prefixes, and the body size limit (Content-Length checked up front, chunked bodies counted as
they arrive). Pure ASGI rather than ``BaseHTTPMiddleware``, which buffers and breaks streaming.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from noa.errors import AuthenticationError, NoaError, PayloadTooLargeError
from noa.http import context
from noa.http.auth import MasterKey, credential_from_headers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROTECTED_PREFIXES = ("/v1/", "/api/v1/")


async def send_error(send: Send, error: NoaError, correlation_id: str) -> None:
    body = orjson.dumps(error.to_dict(correlation_id))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (context.CORRELATION_HEADER.encode(), correlation_id.encode()),
    ]
    headers += [(k.encode(), v.encode()) for k, v in error.headers().items()]
    if isinstance(error, AuthenticationError):
        headers.append((b"www-authenticate", b'Bearer realm="noa"'))
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GatewayMiddleware:
    """Correlation id, auth and body limit, in that order."""

    def __init__(self, app: ASGIApp, *, master_key: MasterKey | None, max_body_bytes: int) -> None:
        self.app = app
        self.master_key = master_key
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = dict(scope["headers"])
        raw_id = headers.get(b"x-correlation-id")
        cid = context.accept_or_new(raw_id.decode("latin-1") if raw_id else None)
        context.correlation_id_var.set(cid)
        scope.setdefault("state", {})["correlation_id"] = cid

        path: str = scope["path"]
        if self.master_key is not None and path.startswith(PROTECTED_PREFIXES):
            auth = headers.get(b"authorization")
            api_key = headers.get(b"x-api-key")
            presented = credential_from_headers(
                auth.decode("latin-1") if auth else None,
                api_key.decode("latin-1") if api_key else None,
            )
            if not self.master_key.verify(presented):
                message = (
                    "Missing API key: send Authorization: Bearer <key>"
                    if presented is None
                    else "Incorrect API key provided"
                )
                await send_error(send, AuthenticationError(message), cid)
                return

        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await send_error(send, self._too_large(), cid)
            return

        header = (context.CORRELATION_HEADER.encode(), cid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, counted_receive, send_with_id)

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"Request body is larger than the limit of {self.max_body_bytes} bytes"
        )
