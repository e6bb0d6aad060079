"""Where a request's credential is: ``Authorization: Bearer <key>`` (or ``x-api-key``)."""

from __future__ import annotations


def credential_from_headers(authorization: str | None, api_key: str | None) -> str | None:
    """The bearer token of ``Authorization``, else the ``x-api-key`` value (Anthropic style)."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return api_key.strip() if api_key else None
