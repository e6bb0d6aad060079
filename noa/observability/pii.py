"""Masking personal data and secrets out of text before it is logged.

Applied by the JSON log formatter to every free-text field of every line (messages, exceptions,
extra string fields): e-mail addresses, API keys and bearer tokens (OpenAI, Anthropic, NOA, any
``Bearer ...``), JWTs, payment card numbers (13-19 digits that pass the Luhn check) and phone
numbers. Replacements name what was there (``[email]``, ``[key]``, ...) so a line still reads.
"""

from __future__ import annotations

import re

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
