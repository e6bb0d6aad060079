"""Masking personal data and secrets out of text before it is logged.

Applied to every log record whatever logger it comes from (``noa/observability/logs.py``: its
message and arguments, exception and stack text, and extra fields, strings nested in dicts and
lists included) and again by the JSON log formatter to every line: e-mail addresses, API keys
and bearer tokens (OpenAI, Anthropic, NOA, any ``Bearer ...``), JWTs, payment card numbers
(13-19 digits that pass the Luhn check) and phone numbers. Replacements name what was there
(``[email]``, ``[key]``, ...) so a line still reads.
"""

from __future__ import annotations

import re
from typing import Any

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_KEY = re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{12,}|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_CARD = re.compile(r"(?<![\d.])(?:\d[ -]?){12,18}\d(?![\d.])")
_PHONE = re.compile(
    r"(?<![\w.+-])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?"
    r"(?:\(\d{2,4}\)[ .-]?\d{2,4}[ .-]\d{3,4}|\d{2,4}[ .-]\d{2,4}[ .-]\d{3,4})"
    r"(?![\w.-])(?![ .-]\d)"
    r"|(?<![\w.])\+\d{7,15}(?!\w)"
)
# One cheap test first: most lines have nothing to mask.
_ANY = re.compile(
    r"@|(?i:bearer|basic)\s|\b(?:sk|pk|rk)-|AKIA|ASIA|eyJ|\d[ .()+-]?\d[ .()+-]?\d[ .()-]?\d"
)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[card]" if 13 <= len(digits) <= 19 and _luhn(digits) else match.group()


def mask(text: str) -> str:
    """``text`` with secrets and personal data replaced."""
    if not _ANY.search(text):
        return text
    text = _BEARER.sub(lambda m: f"{m.group(1)} [token]", text)
    text = _JWT.sub("[jwt]", text)
    text = _KEY.sub("[key]", text)
    text = _EMAIL.sub("[email]", text)
    text = _CARD.sub(_card, text)
    return _PHONE.sub("[phone]", text)


_PLAIN = (int, float, bool, type(None))
_COLLECTIONS = (list, tuple, set, frozenset)
MAX_DEPTH = 8  # nesting masked structure by structure; deeper, a value is masked as its text


def mask_value(value: Any, depth: int = 0) -> Any:
    """``value`` with every string in it masked: strings, dicts (their values), lists, tuples and
    sets, nested. Numbers and None are left alone; any other object whose text holds something
    to mask is replaced by its masked text (otherwise kept, so formatting it stays the same)."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, _PLAIN):
        return value
    if depth < MAX_DEPTH:
        if isinstance(value, dict):
            return {k: mask_value(v, depth + 1) for k, v in value.items()}
        kind = type(value)
        if kind in _COLLECTIONS:  # exactly these: a named tuple's fields are not one iterable
            return kind(mask_value(v, depth + 1) for v in value)
    try:
        text = str(value)
    except Exception:  # an object that cannot say what it is has nothing to leak here
        return value
    masked = mask(text)
    return value if masked == text else masked
