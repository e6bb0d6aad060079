"""Standard Webhooks signatures: what NOA signs, the official ``openai`` SDK and the
``standardwebhooks`` package verify; rotation, tampering and stale timestamps are refused."""

from __future__ import annotations

import base64
import json
import time

import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from noa.jobs import webhook_signing
from noa.jobs.webhook_signing import WebhookSecret, sign, verify

EVENT = {
    "id": "evt_123",
    "object": "event",
    "created_at": 1_700_000_000,
    "type": "batch.completed",
    "data": {"id": "batch_abc"},
}
BODY = json.dumps(EVENT).encode()


def unwrap(secret: WebhookSecret, body: bytes, headers: dict[str, str]) -> object:
    client = openai.OpenAI(api_key="x", webhook_secret=str(secret))
    return client.webhooks.unwrap(body, headers)


def test_the_openai_sdk_unwraps_what_noa_signs() -> None:
    secret = WebhookSecret.generate()
    headers = sign("msg_1", time.time(), BODY, [secret])
    event = unwrap(secret, BODY, headers)
    assert event.type == "batch.completed"  # type: ignore[attr-defined]
    assert event.data.id == "batch_abc"  # type: ignore[attr-defined]


def test_standardwebhooks_verifies_what_noa_signs() -> None:
    secret = WebhookSecret.generate(24)
    headers = sign("msg_1", time.time(), BODY, [secret])
    assert Webhook(str(secret)).verify(BODY, headers) == EVENT


def test_the_headers_have_the_standard_shape() -> None:
    secret = WebhookSecret(b"k" * 32)
    headers = sign("msg_1", 1_700_000_000.9, b"{}", [secret])
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == "1700000000"
    version, signature = headers["webhook-signature"].split(",")
    assert version == "v1" and len(base64.b64decode(signature, validate=True)) == 32


def test_either_secret_verifies_during_a_rotation() -> None:
    old, new = WebhookSecret.generate(), WebhookSecret.generate()
    headers = sign("msg_rot", time.time(), BODY, [old, new])
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        unwrap(secret, BODY, headers)
        Webhook(str(secret)).verify(BODY, headers)
        verify(BODY, headers, secret)
    other = WebhookSecret.generate()
    with pytest.raises(openai.InvalidWebhookSignatureError):
        unwrap(other, BODY, headers)
    with pytest.raises(webhook_signing.WebhookVerificationError):
        verify(BODY, headers, other)


def test_a_tampered_body_or_timestamp_is_refused() -> None:
    secret = WebhookSecret.generate()
    now = time.time()
    headers = sign("msg_t", now, BODY, [secret])
    tampered_body = BODY.replace(b"batch_abc", b"batch_xyz")
    tampered_stamp = {**headers, "webhook-timestamp": str(int(now) - 1)}
    tampered_id = {**headers, "webhook-id": "msg_u"}
    for body, hdrs in ((tampered_body, headers), (BODY, tampered_stamp), (BODY, tampered_id)):
        with pytest.raises(openai.InvalidWebhookSignatureError):
            unwrap(secret, body, hdrs)
        with pytest.raises(WebhookVerificationError):
            Webhook(str(secret)).verify(body, hdrs)
        with pytest.raises(webhook_signing.WebhookVerificationError):
            verify(body, hdrs, secret)


def test_an_old_or_future_timestamp_is_refused() -> None:
    secret = WebhookSecret.generate()
    now = time.time()
    for stamp in (now - 400, now + 400):  # well past the 300 s tolerance, whole seconds apart
        headers = sign("msg_old", stamp, BODY, [secret])
        with pytest.raises(openai.InvalidWebhookSignatureError):
            unwrap(secret, BODY, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(str(secret)).verify(BODY, headers)
        with pytest.raises(webhook_signing.WebhookVerificationError, match="too"):
            verify(BODY, headers, secret)
    # within the tolerance, by our own injected clock
    headers = sign("msg_old", 1000, BODY, [secret])
    verify(BODY, headers, secret, clock=lambda: 1299.0)
    with pytest.raises(webhook_signing.WebhookVerificationError, match="too old"):
        verify(BODY, headers, secret, clock=lambda: 1301.0)


def test_missing_or_malformed_headers_are_refused() -> None:
    secret = WebhookSecret.generate()
    headers = sign("msg_m", 1000, BODY, [secret])
    clock = lambda: 1000.0  # noqa: E731
    for name in headers:
        partial = {k: v for k, v in headers.items() if k != name}
        with pytest.raises(webhook_signing.WebhookVerificationError, match="missing"):
            verify(BODY, partial, secret, clock=clock)
    for bad in ({"webhook-timestamp": "1e3"}, {"webhook-signature": "v2,abc"}):
        with pytest.raises(webhook_signing.WebhookVerificationError):
            verify(BODY, {**headers, **bad}, secret, clock=clock)
    upper = {k.upper(): v for k, v in headers.items()}
    verify(BODY, upper, secret, clock=clock)


def test_secrets_parse_generate_and_never_show_themselves() -> None:
    secret = WebhookSecret.generate(token_bytes=lambda n: b"\x01" * n)
    text = str(secret)
    assert text.startswith("whsec_") and WebhookSecret.parse(text) == secret
    assert len(WebhookSecret.parse(text).key) == 32
    assert "whsec" not in repr(secret) and text[6:] not in repr(secret)
    assert len(WebhookSecret.generate(24).key) == 24
    for bad in ("abc", "whsec_", "whsec_not base64!", "whsec_YWJ", "whsec_YW=J"):
        with pytest.raises(ValueError):
            WebhookSecret.parse(bad)
    for n in (16, 65):
        with pytest.raises(ValueError):
            WebhookSecret.generate(n)


def test_sign_refuses_what_no_verifier_could_check() -> None:
    secret = WebhookSecret.generate()
    with pytest.raises(ValueError):
        sign("msg", 1000, BODY, [])
    for msg_id in ("", "a b", "a\nb"):
        with pytest.raises(ValueError):
            sign(msg_id, 1000, BODY, [secret])
    with pytest.raises(ValueError):
        sign("msg", 1000, b"\xff\xfe", [secret])


ids = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
)
bodies = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=200).map(
    lambda s: s.encode("utf-8")
)
keys = st.binary(min_size=24, max_size=64)


@given(msg_id=ids, body=bodies, key=keys, other=keys, stamp=st.integers(0, 2**40))
def test_sign_then_verify_round_trips(
    msg_id: str, body: bytes, key: bytes, other: bytes, stamp: int
) -> None:
    secret = WebhookSecret(key)
    headers = sign(msg_id, stamp, body, [secret])
    verify(body, headers, secret, clock=lambda: float(stamp))
    assert WebhookSecret.parse(str(secret)) == secret
    if other != key:
        with pytest.raises(webhook_signing.WebhookVerificationError):
            verify(body, headers, WebhookSecret(other), clock=lambda: float(stamp))
    with pytest.raises(webhook_signing.WebhookVerificationError):
        verify(body + b"x", headers, secret, clock=lambda: float(stamp))


@given(msg_id=ids, body=bodies, key=keys)
def test_both_libraries_verify_any_id_and_body(msg_id: str, body: bytes, key: bytes) -> None:
    secret = WebhookSecret(key)
    headers = sign(msg_id, time.time(), body, [secret])
    Webhook(str(secret)).verify(body, headers, json_parse=False)
    client = openai.OpenAI(api_key="x", webhook_secret=str(secret))
    client.webhooks.verify_signature(body, headers)
