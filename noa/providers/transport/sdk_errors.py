"""SDK exceptions to NoaErrors, for the official ``openai`` and ``anthropic`` SDKs alike.

Both SDKs share one exception shape (``APIStatusError`` with ``status_code``, ``body`` and
``response``; ``APITimeoutError``; ``APIConnectionError``), so one mapping serves both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType

import orjson

from noa.errors import (
    NoaError,
    UpstreamError,
    UpstreamTimeoutError,
    error_for_upstream_status,
    parse_retry_after,
    upstream_message,
)


@contextlib.contextmanager
def translated(provider: str, sdk: ModuleType) -> Iterator[None]:
    """Re-raise anything the SDK (or a malformed reply) raises as the NoaError it means."""
    try:
        yield
    except NoaError as e:
        e.provider = e.provider or provider
        raise
    except sdk.APIStatusError as e:
        raise error_for_upstream_status(
            e.status_code,
            upstream_message(e.body, e.message),
            provider=provider,
            retry_after=parse_retry_after(e.response.headers.get("retry-after")),
        ) from e
    except sdk.APITimeoutError as e:  # before APIConnectionError: it is a subclass
        raise UpstreamTimeoutError(f"provider '{provider}' timed out", provider=provider) from e
    except sdk.APIConnectionError as e:
        raise UpstreamError(
            f"provider '{provider}' could not be reached: {e.message}", provider=provider
        ) from e
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UpstreamError(
            f"provider '{provider}' sent a malformed reply: {e}", provider=provider
        ) from e
