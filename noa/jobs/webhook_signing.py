"""Standard Webhooks signatures (https://www.standardwebhooks.com), as NOA signs its callbacks.

A delivery carries three headers:

    webhook-id:         the message id, the same on every retry of one event
    webhook-timestamp:  integer seconds since the epoch, when this attempt was signed
    webhook-signature:  v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">

Secrets are ``whsec_`` followed by the base64 of the key bytes. During a rotation NOA signs
with every current secret, the signatures separated by spaces, so a receiver holding either the
old or the new secret verifies the message. The official ``openai`` SDK's
``client.webhooks.unwrap(body, headers)`` and the ``standardwebhooks`` package verify exactly
this; ``verify`` here does the same, for NOA's own tests and for users without either.

The body must be UTF-8 (JSON is): both verifiers decode it before hashing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

SECRET_PREFIX = "whsec_"
TOLERANCE_S = 300  # how far a timestamp may be from the verifier's clock, either way
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64


class WebhookVerificationError(ValueError):
    """A webhook's headers are missing or malformed, its timestamp is outside the tolerance, or
    no signature matches."""


@dataclass(frozen=True, repr=False)
class WebhookSecret:
    """One signing key. ``str()`` gives its ``whsec_`` form; ``repr()`` never shows it."""

    key: bytes

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("a webhook secret may not be empty")

    @classmethod
    def parse(cls, text: str) -> WebhookSecret:
        """``whsec_<base64>`` (standard, padded base64, as the ``openai`` SDK decodes it)."""
        if not text.startswith(SECRET_PREFIX):
            raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
        try:
            key = base64.b64decode(text[len(SECRET_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a webhook secret is whsec_ and standard base64") from None
        return cls(key)

    @classmethod
    def generate(
        cls, nbytes: int = 32, token_bytes: Callable[[int], bytes] = _secrets.token_bytes
    ) -> WebhookSecret:
        """A new random secret of ``nbytes`` (24 to 64) bytes."""
        if not MIN_KEY_BYTES <= nbytes <= MAX_KEY_BYTES:
            raise ValueError(f"a webhook secret has {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes")
        key = token_bytes(nbytes)
        if len(key) != nbytes:
            raise ValueError("token_bytes returned the wrong number of bytes")
        return cls(key)

    def __str__(self) -> str:
        return SECRET_PREFIX + base64.b64encode(self.key).decode("ascii")

    def __repr__(self) -> str:
        return "WebhookSecret(<redacted>)"

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The base64 HMAC-SHA256 of ``{msg_id}.{timestamp}.{body}`` (without ``v1,``)."""
        content = f"{msg_id}.{timestamp}.".encode() + body
        return base64.b64encode(hmac.new(self.key, content, hashlib.sha256).digest()).decode()


def _check_id(msg_id: str) -> None:
    if not msg_id or not msg_id.isascii() or not msg_id.isprintable() or " " in msg_id:
        raise ValueError("a webhook id is non-empty printable ASCII without spaces")


def sign(
    msg_id: str, timestamp: float, body: bytes, secrets: Sequence[WebhookSecret]
) -> dict[str, str]:
    """The ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers for ``body``,
    signed with each of ``secrets`` (several during a rotation); ``timestamp`` in seconds."""
    _check_id(msg_id)
    if not secrets:
        raise ValueError("sign needs at least one secret")
    body.decode("utf-8")  # a body the verifiers cannot decode would never verify
    seconds = int(timestamp)
    signatures = " ".join(f"v1,{s.signature(msg_id, seconds, body)}" for s in secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(seconds),
        "webhook-signature": signatures,
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise WebhookVerificationError(f"missing {name} header")


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secrets: Sequence[WebhookSecret] | WebhookSecret,
    *,
    tolerance_s: float = TOLERANCE_S,
    clock: Callable[[], float] = time.time,
) -> None:
    """Raise ``WebhookVerificationError`` unless one ``v1`` signature in ``headers`` matches
    ``body`` under one of ``secrets`` and the timestamp is within ``tolerance_s`` of ``clock``.
    Signatures are compared in constant time."""
    if isinstance(secrets, WebhookSecret):
        secrets = (secrets,)
    data = body.encode() if isinstance(body, str) else body
    msg_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    offered = _header(headers, "webhook-signature")
    if not stamp.isascii() or not stamp.isdigit():
        raise WebhookVerificationError("webhook-timestamp is not integer seconds")
    timestamp = int(stamp)
    now = clock()
    if timestamp < now - tolerance_s:
        raise WebhookVerificationError("webhook timestamp too old")
    if timestamp > now + tolerance_s:
        raise WebhookVerificationError("webhook timestamp too new")
    candidates = [
        part[3:].encode() for part in offered.split() if part.startswith("v1,") and len(part) > 3
    ]
    for secret in secrets:
        expected = secret.signature(msg_id, timestamp, data).encode()
        matched = False
        for candidate in candidates:  # each one compared: no early exit on a match
            matched |= hmac.compare_digest(expected, candidate)
        if matched:
            return
    raise WebhookVerificationError("no matching webhook signature")
