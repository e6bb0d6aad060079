"""Deliver one webhook event: a signed JSON POST, retried with backoff, every attempt recorded.

How a delivery connects (the SSRF guard holds for what is actually connected to):
``check_target`` resolves the host once and checks every address; the sender then opens the TCP
connection itself (``loop.create_connection``) to one of those checked addresses, trying them in
order, and never resolves the name again. The request still names the original host: the
``Host`` header carries it, and for https it is the TLS ``server_hostname``, so SNI and the
certificate check are against the name, not the IP. (An HTTP client given the URL would resolve
the name again on connect, which a rebinding DNS server can answer differently.) The request is
written and the response head parsed by NOA's own HTTP/1.1 client
(``noa.providers.transport.http1``); its body is never read. Environment proxies are not used:
a proxy would connect to a name the guard never checked.

Redirects are not followed by any client: a 301, 302, 303, 307 or 308 is followed here, at most
``max_redirects`` times per attempt, re-sending the same signed POST (a webhook turned into a GET
delivers nothing), each ``Location`` checked by ``check_target`` first. A refused or missing
``Location``, too many redirects, or any other 3xx fails the delivery for good.

Outcomes: 2xx delivered; 408, 429, 5xx, connection errors, timeouts and an unresolvable host
are retried, up to ``max_attempts`` attempts in all, after ``backoff_delay`` (a 429's or 503's
integer ``Retry-After`` lengthens the wait, up to the cap); any other 4xx, and a refused
target, fail at once. Each attempt is signed afresh (new timestamp, same ``webhook-id``) and is
bounded by ``timeout_s`` from resolution to response head. Neither the secrets nor the body are
ever logged or put into an attempt's error.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import orjson

from noa.jobs.webhook_signing import WebhookSecret, sign
from noa.jobs.webhook_targets import (
    Resolver,
    WebhookTarget,
    WebhookTargetError,
    WebhookTargetUnresolvedError,
    check_target,
    system_resolver,
)
from noa.providers.transport import http1

logger = logging.getLogger("noa.jobs.webhooks")

REDIRECTS = frozenset({301, 302, 303, 307, 308})
RETRIED_4XX = frozenset({408, 429})
USER_AGENT = "NOA-Webhooks/1"

Outcome = Literal["delivered", "failed", "exhausted"]


@dataclass(frozen=True)
class WebhookAttempt:
    """One try at a delivery (its redirects included): when it started (the sender's clock),
    the final HTTP status if one came, what went wrong if anything, and how long it took."""

    at: float
    status_code: int | None
    error: str | None
    duration_ms: float


@dataclass(frozen=True)
class WebhookDelivery:
    """The result of ``WebhookSender.deliver``: ``delivered`` (a 2xx), ``failed`` (a permanent
    refusal: a 4xx, a refused target, a bad redirect) or ``exhausted`` (every attempt failed in
    a retryable way), with every attempt in order."""

    msg_id: str
    outcome: Outcome
    attempts: tuple[WebhookAttempt, ...]

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"

    @property
    def error(self) -> str | None:
        return None if self.delivered or not self.attempts else self.attempts[-1].error


@dataclass(frozen=True)
class WebhookTry:
    """The result of ``WebhookSender.attempt``: ``delivered`` (a 2xx), ``failed`` (a permanent
    refusal) or ``retry`` (another attempt may help; ``retry_after``: the seconds a 429's or
    503's ``Retry-After`` asked for, if any)."""

    attempt: WebhookAttempt
    outcome: Literal["delivered", "failed", "retry"]
    retry_after: float | None = None


def backoff_delay(
    attempt: int, *, base_s: float, cap_s: float, rng: Callable[[], float] = random.random
) -> float:
    """``min(cap, base * 2**attempt + up to 30% jitter)``; ``attempt`` counts from 0."""
    raw = base_s * 2.0 ** min(attempt, 64)
    return min(cap_s, raw + raw * 0.3 * rng())


class _Failure(Exception):
    """An attempt's end without a 2xx: ``retry`` says whether another attempt may help."""

    def __init__(self, message: str, *, retry: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.status = status
        self.retry_after: float | None = None


class _OneShot:
    """The ``http1.Owner`` of a connection used once: nothing goes back to a pool."""

    def release(self, conn: http1.Connection) -> None:
        conn.drop()

    def forget(self, conn: http1.Connection) -> None:
        return None


class WebhookSender:
    """Signs and POSTs webhook events to checked targets (see the module docstring).

    ``clock`` (wall seconds) dates the signatures and the attempts, ``timer`` (monotonic)
    measures them, ``sleep`` waits between attempts and ``rng`` (0 <= x < 1) draws the jitter:
    all injectable, so tests neither wait nor depend on chance."""

    def __init__(
        self,
        secrets: Sequence[WebhookSecret],
        *,
        allow: Sequence[str] = (),
        max_attempts: int = 5,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 300.0,
        timeout_s: float = 10.0,
        max_redirects: int = 3,
        resolve: Resolver = system_resolver,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        if not secrets:
            raise ValueError("a webhook sender needs at least one secret")
        if not 1 <= max_attempts <= 100:
            raise ValueError("max_attempts is 1 to 100")
        if not 0 <= max_redirects <= 10:
            raise ValueError("max_redirects is 0 to 10")
        for name, value in (("timeout_s", timeout_s), ("backoff_cap_s", backoff_cap_s)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} is a positive number of seconds")
        if not (math.isfinite(backoff_base_s) and backoff_base_s >= 0):
            raise ValueError("backoff_base_s is a non-negative number of seconds")
        self.secrets = tuple(secrets)
        self.allow = tuple(allow)
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects
        self.resolve = resolve
        self.clock = clock
        self.timer = timer
        self.sleep = sleep
        self.rng = rng
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.user_agent = user_agent

    async def deliver(
        self,
        url: str,
        payload: bytes | Mapping[str, Any],
        *,
        msg_id: str,
        secrets: Sequence[WebhookSecret] | None = None,
    ) -> WebhookDelivery:
        """POST ``payload`` (JSON bytes, or a mapping encoded as JSON) to ``url`` as the event
        ``msg_id``, signed with ``secrets`` (the sender's own when None), until it is
        delivered, fails for good or runs out of attempts."""
        body, keys = self._prepare(payload, msg_id, secrets)
        attempts: list[WebhookAttempt] = []
        outcome: Outcome = "exhausted"
        for number in range(self.max_attempts):
            result = await self._try(url, body, msg_id, keys, number + 1)
            attempts.append(result.attempt)
            if result.outcome == "delivered":
                outcome = "delivered"
                break
            if result.outcome == "failed":
                outcome = "failed"
                break
            if number + 1 < self.max_attempts:
                await self.sleep(self._delay(number, result.retry_after))
        return WebhookDelivery(msg_id, outcome, tuple(attempts))

    async def attempt(
        self,
        url: str,
        payload: bytes | Mapping[str, Any],
        *,
        msg_id: str,
        secrets: Sequence[WebhookSecret] | None = None,
        number: int = 1,
    ) -> WebhookTry:
        """One attempt (its redirects included) at delivering ``payload`` to ``url`` as the
        event ``msg_id``, signed now: no retry, no sleep. The caller (the outbox) keeps the
        count (``number``, for the log) and schedules any retry."""
        body, keys = self._prepare(payload, msg_id, secrets)
        return await self._try(url, body, msg_id, keys, number)

    def _prepare(
        self,
        payload: bytes | Mapping[str, Any],
        msg_id: str,
        secrets: Sequence[WebhookSecret] | None,
    ) -> tuple[bytes, tuple[WebhookSecret, ...]]:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        keys = tuple(secrets) if secrets else self.secrets
        sign(msg_id, 0, body, keys)  # an unusable id or body fails here, before any attempt
        return body, keys

    async def _try(
        self, url: str, body: bytes, msg_id: str, keys: Sequence[WebhookSecret], number: int
    ) -> WebhookTry:
        at, started = self.clock(), self.timer()
        failure: _Failure | None = None
        status: int | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                status = await self._attempt(url, body, msg_id, keys, at)
        except _Failure as e:
            failure, status = e, e.status
        except TimeoutError:
            failure = _Failure(f"timed out after {self.timeout_s:g} s", retry=True)
        except Exception as e:  # a bug, not the receiver: recorded, not retried
            logger.exception("webhook %s: unexpected error", msg_id)
            failure = _Failure(f"unexpected error: {type(e).__name__}", retry=False)
        duration_ms = round((self.timer() - started) * 1000.0, 3)
        error = None if failure is None else str(failure)
        attempt = WebhookAttempt(at, status, error, duration_ms)
        host = _host_of(url)
        if failure is None:
            logger.info("webhook %s delivered to %s (%s)", msg_id, host, status)
            return WebhookTry(attempt, "delivered")
        logger.warning("webhook %s to %s: attempt %d failed: %s", msg_id, host, number, error)
        if not failure.retry:
            return WebhookTry(attempt, "failed")
        return WebhookTry(attempt, "retry", failure.retry_after)

    def _delay(self, number: int, retry_after: float | None) -> float:
        delay = backoff_delay(
            number, base_s=self.backoff_base_s, cap_s=self.backoff_cap_s, rng=self.rng
        )
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_cap_s))
        return delay

    async def _attempt(
        self, url: str, body: bytes, msg_id: str, keys: Sequence[WebhookSecret], at: float
    ) -> int:
        """The final 2xx status of one attempt, following redirects; else ``_Failure``."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self.user_agent,
            **sign(msg_id, at, body, keys),
        }
        current = url
        for hop in range(self.max_redirects + 1):
            try:
                target = await check_target(current, allow=self.allow, resolve=self.resolve)
            except WebhookTargetUnresolvedError as e:
                raise _Failure(e.message, retry=True) from None
            except WebhookTargetError as e:
                note = " (after a redirect)" if hop else ""
                raise _Failure(e.message + note, retry=False) from None
            status, response_headers = await self._post(target, body, headers)
            if status in REDIRECTS:
                location = response_headers.get("location")
                if not location:
                    raise _Failure(f"{status} without a Location", retry=False, status=status)
                current = urljoin(current, location)
                continue
            if 200 <= status < 300:
                return status
            retry = status in RETRIED_4XX or 500 <= status < 600
            failure = _Failure(f"the receiver answered {status}", retry=retry, status=status)
            if status in (429, 503):
                failure.retry_after = _retry_after(response_headers.get("retry-after"))
            raise failure
        raise _Failure(f"more than {self.max_redirects} redirects", retry=False, status=status)

    async def _post(
        self, target: WebhookTarget, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str]]:
        """POST to one of the target's checked addresses; the status and response headers."""
        conn = await self._connect(target)
        try:
            response = http1.Response(conn)
            conn.response = response
            head = http1.request_head(
                "POST", target.target, target.host_header, {**headers, "Connection": "close"}
            )
            assert conn.transport is not None
            conn.transport.write(http1.with_body(head, body) + body)
            try:
                await asyncio.shield(response.head)
            except (ConnectionError, http1.ResponseTooLarge) as e:
                raise _Failure(f"no response: {_describe(e)}", retry=True) from None
            return response.status, dict(response.headers)
        finally:
            conn.drop()

    async def _connect(self, target: WebhookTarget) -> http1.Connection:
        """A connection to the first checked address that accepts one (never the name)."""
        loop = asyncio.get_running_loop()
        errors: list[str] = []
        for address in target.addresses:
            try:
                _, conn = await loop.create_connection(
                    lambda: http1.Connection(_OneShot()),
                    address,
                    target.port,
                    ssl=self.ssl_context if target.tls else None,
                    server_hostname=target.host if target.tls else None,
                )
            except OSError as e:  # refused, unreachable, TLS failures (ssl.SSLError)
                errors.append(f"{address}: {_describe(e)}")
                continue
            return conn
        raise _Failure(f"could not connect ({'; '.join(errors)})", retry=True)


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def _host_of(url: str) -> str:
    """The host of ``url`` for the log (no path or query: they may carry tokens)."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"
