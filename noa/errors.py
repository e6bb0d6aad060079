"""NOA's error hierarchy: one class per failure a client can see.

    NoaError                          500 server_error      (category: server)
    ├── InvalidRequestError           400 invalid_request_error (client)
    ├── AuthenticationError           401 authentication_error  (client)
    ├── PermissionDeniedError         403 permission_error      (client)
    ├── NotFoundError                 404 not_found_error       (client)
    │   └── ModelNotFoundError        404 invalid_request_error / model_not_found
    ├── MethodNotAllowedError         405 invalid_request_error (client)
    ├── PayloadTooLargeError          413 invalid_request_error (client)
    ├── RateLimitError                429 rate_limit_error      (client)
    ├── ClientDisconnectedError       499 client_closed_request (client; nobody reads it)
    ├── UpstreamError                 502 upstream_error        (external, retryable)
    │   ├── UpstreamTimeoutError      504 timeout_error         (external, retryable)
    │   ├── UpstreamRateLimitError    502 upstream_error        (external, retryable)
    │   ├── UpstreamAuthError         502 upstream_error        (external, falls back, no retry)
    │   └── UpstreamTooLargeError     502 upstream_error        (external, falls back, no retry)
    └── ServiceUnavailableError       503 service_unavailable   (server)

Every error crosses Ray DeploymentHandles, so each one pickles to itself with all its
attributes (``__reduce__`` rebuilds from keyword arguments). ``retryable`` tells a router
whether trying another provider can help; a client's own mistake never is.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any, ClassVar, Literal

Category = Literal["client", "external", "server"]


class NoaError(Exception):
    """Base of every error NOA reports; carries the HTTP status and OpenAI error fields."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    category: ClassVar[Category] = "server"
    retryable: ClassVar[bool] = False
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after = retry_after
        self.provider = provider

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self._kwargs()))

    def _kwargs(self) -> dict[str, Any]:
        return {
            "param": self.param,
            "code": self.code,
            "retry_after": self.retry_after,
            "provider": self.provider,
        }

    def to_dict(self, correlation_id: str | None = None) -> dict[str, Any]:
        """The OpenAI-shaped error body, with NOA's ``category`` and ``correlation_id``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
                "category": self.category,
                "correlation_id": correlation_id,
            }
        }

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": str(max(1, int(self.retry_after + 0.999)))}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status_code})"


def _rebuild(cls: type[NoaError], message: str, kwargs: dict[str, Any]) -> NoaError:
    return cls(message, **kwargs)


class InvalidRequestError(NoaError):
    """The request is malformed or asks for something the model cannot do."""

    status_code = 400
    error_type = "invalid_request_error"
    category = "client"


class AuthenticationError(NoaError):
    """Missing or wrong credentials."""

    status_code = 401
    error_type = "authentication_error"
    category = "client"
    default_code = "invalid_api_key"


class PermissionDeniedError(NoaError):
    """The credentials are valid but do not allow this."""

    status_code = 403
    error_type = "permission_error"
    category = "client"


class NotFoundError(NoaError):
    """No such route or resource."""

    status_code = 404
    error_type = "not_found_error"
    category = "client"


class ModelNotFoundError(NotFoundError):
    """The model name resolves to no configured model or provider (OpenAI's own shape)."""

    error_type = "invalid_request_error"
    default_code = "model_not_found"


class MethodNotAllowedError(NoaError):
    status_code = 405
    error_type = "invalid_request_error"
    category = "client"
    default_code = "method_not_allowed"


class ConflictError(NoaError):
    """The request conflicts with the resource's state (an idempotency key reused with another
    request, a finished job cancelled)."""

    status_code = 409
    error_type = "invalid_request_error"
    category = "client"
    default_code = "conflict"


class PayloadTooLargeError(NoaError):
    status_code = 413
    error_type = "invalid_request_error"
    category = "client"
    default_code = "request_too_large"


class RateLimitError(NoaError):
    """The client's own limit (rate or budget) is exhausted; never a reason to fall back."""

    status_code = 429
    error_type = "rate_limit_error"
    category = "client"
    default_code = "rate_limit_exceeded"


class ClientDisconnectedError(NoaError):
    """The client went away before the answer; its upstream call was cancelled (logged as 499,
    the status nginx uses for it; nobody is left to read it)."""

    status_code = 499
    error_type = "client_closed_request"
    category = "client"
    default_code = "client_closed_request"


class UpstreamError(NoaError):
    """The provider failed (5xx, malformed reply, connection error): another may answer."""

    status_code = 502
    error_type = "upstream_error"
    category = "external"
    retryable = True
    default_code = "upstream_error"


class UpstreamTimeoutError(UpstreamError):
    status_code = 504
    error_type = "timeout_error"
    default_code = "upstream_timeout"


class UpstreamRateLimitError(UpstreamError):
    """The provider answered 429: NOA's account is limited there, not the client."""

    default_code = "upstream_rate_limited"


class UpstreamAuthError(UpstreamError):
    """The provider refused NOA's own credentials: a configuration problem, not the client's."""

    retryable = False
    default_code = "upstream_auth_failed"


class UpstreamTooLargeError(UpstreamError):
    """The provider's answer was larger than NOA reads (a gzip bomb, a runaway body): another
    provider may answer; the same one would send it again."""

    retryable = False
    default_code = "upstream_response_too_large"


class ServiceUnavailableError(NoaError):
    status_code = 503
    error_type = "service_unavailable"
    category = "server"
    default_code = "service_unavailable"


ALL_ERRORS: tuple[type[NoaError], ...] = (
    NoaError,
    InvalidRequestError,
    AuthenticationError,
    PermissionDeniedError,
    NotFoundError,
    ModelNotFoundError,
    MethodNotAllowedError,
    PayloadTooLargeError,
    RateLimitError,
    ClientDisconnectedError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamRateLimitError,
    UpstreamAuthError,
    UpstreamTooLargeError,
    ServiceUnavailableError,
)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), if it has any."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def upstream_message(body: object, fallback: str) -> str:
    """The ``message`` of an upstream's error body (OpenAI or Anthropic shape)."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return fallback


def error_for_upstream_status(
    status: int, message: str, *, provider: str, retry_after: float | None = None
) -> NoaError:
    """Map an upstream HTTP status to the error NOA reports (one table for every adapter)."""
    if status in (400, 422):
        return InvalidRequestError(message, provider=provider)
    if status == 404:
        return NotFoundError(message, provider=provider, code="upstream_not_found")
    if status == 413:
        return PayloadTooLargeError(message, provider=provider)
    if status in (401, 403):
        return UpstreamAuthError(
            f"provider '{provider}' rejected NOA's credentials: {message}", provider=provider
        )
    if status == 429:
        return UpstreamRateLimitError(message, provider=provider, retry_after=retry_after)
    if status in (408, 504):
        return UpstreamTimeoutError(message, provider=provider)
    return UpstreamError(message, provider=provider)
