"""Master-key authentication: ``Authorization: Bearer <key>`` (or ``x-api-key``).

The key is kept only as a SHA-256 digest and compared in constant time, so neither its value nor
its length leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac


class MasterKey:
    """Checks a presented credential against the configured master key."""

    def __init__(self, key: str) -> None:
        self._digest = hashlib.sha256(key.encode("utf-8")).digest()

    def verify(self, presented: str | None) -> bool:
        candidate = hashlib.sha256((presented or "").encode("utf-8")).digest()
        return hmac.compare_digest(candidate, self._digest) and bool(presented)


def credential_from_headers(authorization: str | None, api_key: str | None) -> str | None:
    """The bearer token of ``Authorization``, else the ``x-api-key`` value (Anthropic style)."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return api_key.strip() if api_key else None
