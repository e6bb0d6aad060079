"""What the log formatter masks, and what it leaves alone."""

from __future__ import annotations

import logging

import orjson
import pytest

from noa.observability.logs import JsonFormatter
from noa.observability.pii import mask


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail jane.doe+x@example.co.uk now", "mail [email] now"),
        ("Authorization: Bearer abcDEF123456789xyz", "Authorization: Bearer [token]"),
        ("key sk-proj-AbCdEf0123456789xyz used", "key [key] used"),
        ("key sk-ant-api03-AbCdEf0123456789 used", "key [key] used"),
        ("noa key sk-noa-3f9a8b7c6d5e4f3a2b1c", "noa key [key]"),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws [key]"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_nat-ure", "jwt [jwt]"),
        ("card 4111 1111 1111 1111 exp", "card [card] exp"),
        ("card 4111-1111-1111-1111", "card [card]"),
        ("call +44 20 7946 0958 or (555) 123-4567", "call [phone] or [phone]"),
        ("call +14155552671", "call [phone]"),
    ],
)
def test_secrets_and_personal_data_are_masked(text: str, expected: str) -> None:
    assert mask(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "POST /v1/chat/completions 200 in 12.345 ms",
        "correlation 3f2a9c0d4b5e6f708192a3b4c5d6e7f8",
        "at 2026-11-23T17:19:49.123Z retry in 1.5 s",
        "order 1234 5678 9012 3456 is not a card (fails Luhn)",
        "model gpt-4o-mini, 1024 tokens, version 1.106.2",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert mask(text) == text


def test_every_free_text_field_of_a_log_line_is_masked() -> None:
    record = logging.LogRecord(
        "noa.x", logging.WARNING, "f", 1, "user %s failed", ("a@b.io",), None
    )
    record.detail = "token Bearer abcdefghijklmnop"
    record.status = 401
    record.route = "/v1/chat/completions"
    try:
        raise ValueError("bad key sk-proj-AbCdEf0123456789xyz")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    body = orjson.loads(line)
    assert body["message"] == "user [email] failed"
    assert body["detail"] == "token Bearer [token]"
    assert body["status"] == 401 and body["route"] == "/v1/chat/completions"
    assert "sk-proj" not in line and "a@b.io" not in line and "[key]" in body["exception"]
