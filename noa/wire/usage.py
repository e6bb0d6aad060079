"""What an answer used, even when nobody said: usage counted from the chunks as they pass.

A stream reports its usage in its last chunk; one that is cut first (the client left, the
upstream failed) reports none, yet its tokens were produced and must be paid for.
``StreamTally`` watches the chunks go by and, at the end, gives the provider's usage when it
came, else a count: the prompt's estimate plus the completion seen, at least one token per
chunk that carried text (a local model sends one chunk per sampled token, so for it the count
is the tokenizer's) and at least ~4 characters per token.
"""

from __future__ import annotations

from typing import Any

Body = dict[str, Any]
TEXT_FIELDS = ("content", "refusal", "reasoning_content", "text")


def _seen(part: Any) -> int:
    """Characters of generated text in one choice's delta (or a completion choice)."""
    if not isinstance(part, dict):
        return 0
    chars = 0
    for name in TEXT_FIELDS:
        value = part.get(name)
        if isinstance(value, str):
            chars += len(value)
    calls = part.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                chars += sum(len(v) for v in function.values() if isinstance(v, str))
    function = part.get("function_call")
    if isinstance(function, dict):
        chars += sum(len(v) for v in function.values() if isinstance(v, str))
    return chars


class StreamTally:
    """The chunks of one answer, counted; ``usage`` is what its end is charged."""

    __slots__ = ("chars", "chunks", "reported")

    def __init__(self) -> None:
        self.chars = 0
        self.chunks = 0  # chunks (per choice) that carried generated text
        self.reported: Body | None = None  # the provider's own usage, when it came

    def observe(self, chunk: Body) -> None:
        usage = chunk.get("usage")
        if usage:
            self.reported = usage
        choices = chunk.get("choices")
        if not choices:
            return
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            seen = _seen(delta) if delta is not None else _seen(choice)
            if seen:
                self.chars += seen
                self.chunks += 1

    def observe_body(self, body: Body) -> None:
        """A whole JSON answer (its choices' messages) counted the same way."""
        usage = body.get("usage")
        if usage:
            self.reported = usage
        for choice in body.get("choices") or ():
            if isinstance(choice, dict):
                seen = _seen(choice.get("message") or choice)
                if seen:
                    self.chars += seen
                    self.chunks += 1

    @property
    def completion_tokens(self) -> int:
        return max(self.chunks, -(-self.chars // 4))

    def usage(self, prompt_tokens: int) -> Body | None:
        """The provider's usage if it came, else the count (None when nothing was seen and no
        prompt is known: nothing to charge)."""
        if self.reported:
            return self.reported
        completion = self.completion_tokens
        if not completion and not prompt_tokens:
            return None
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }
