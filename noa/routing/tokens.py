"""What a request may use, in tokens, before anything is sent: an estimate and a ceiling.

Two figures per request, for two jobs:

- the **estimate** (``prompt`` + ``completion``): ~4 characters per prompt token, and the
  completion its own ``max_tokens`` allows (else a default), times ``n``. Tokens-per-minute
  limits and provider quotas reserve it, as OpenAI's own limiter does; the answer's real usage
  replaces it afterwards.
- the **ceiling** (``prompt_max`` + ``completion_max``): what the request can use at most. A
  token is at least one byte of text in the byte-level vocabularies of every supported provider,
  so the prompt uses at most its UTF-8 bytes (plus a few tokens of chat template per message;
  an image counts ``IMAGE_TOKENS``); the completion at most ``n`` times its ``max_tokens``, else
  the model's context length, else ``limits.max_completion_tokens``. Budgets reserve the
  ceiling, which is what makes "a budget is never overspent" hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Body = dict[str, Any]
DEFAULT_COMPLETION_TOKENS = 256  # the estimate of a chat or completion that sets no limit
DEFAULT_COMPLETION_CEILING = 16_384  # its ceiling when neither it nor its model bounds it
MESSAGE_TOKENS = 8  # chat template tokens around one message (role markers, separators)
IMAGE_TOKENS = 2_000  # an image part, whatever its size (OpenAI's largest detail is ~1,100)
MARKUP = frozenset({"role", "type", "id", "tool_call_id"})  # in the template's tokens, not text
MEDIA_PARTS = frozenset({"image_url", "input_image", "input_audio", "image", "file"})


@dataclass(frozen=True, slots=True)
class Tokens:
    """A request's tokens: the estimate (``prompt`` + ``completion``) and the ceiling
    (``prompt_max`` + ``completion_max``); ``choices`` is its ``n``."""

    prompt: int
    completion: int
    limited: bool  # the request set max_tokens / max_completion_tokens itself
    prompt_max: int = 0
    completion_max: int = 0
    choices: int = 1

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    @property
    def ceiling(self) -> int:
        return self.prompt_max + self.completion_max


@dataclass(slots=True)
class _Text:
    chars: int = 0
    bytes: int = 0
    tokens: int = 0  # exact: pre-tokenized input, images, template overhead

    def add(self, value: Any) -> None:
        """Every string in ``value`` (a message, a part, a list of them); not the keys."""
        if isinstance(value, str):
            self.chars += len(value)
            self.bytes += len(value) if value.isascii() else len(value.encode("utf-8", "replace"))
        elif isinstance(value, dict):
            if value.get("type") in MEDIA_PARTS:
                self.tokens += IMAGE_TOKENS
                return
            for name, item in value.items():
                if name not in MARKUP:
                    self.add(item)
        elif isinstance(value, list):
            if value and all(type(v) is int for v in value):
                self.tokens += len(value)  # token ids (completions' and embeddings' inputs)
                return
            for item in value:
                self.add(item)


def _limit(request: Body) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = request.get(name)
        if type(value) is int and value > 0:
            return value
    return None


def estimate_tokens(
    request: Body,
    context_length: int | None = None,
    *,
    completion_ceiling: int = DEFAULT_COMPLETION_CEILING,
) -> Tokens:
    """The request's estimate and ceiling (``context_length``: its model's, when known)."""
    text = _Text()
    template = 0  # the chat template's own tokens: at most this many
    messages = request.get("messages")
    if isinstance(messages, list):
        text.add(messages)
        template = MESSAGE_TOKENS * (len(messages) + 1)
    for name in ("prompt", "input", "suffix"):
        if name in request:
            text.add(request[name])
    for name in ("tools", "functions", "response_format"):  # sent to the model as prompt too
        if name in request:
            text.add(request[name])
    prompt = text.chars // 4 + 1 + text.tokens
    prompt_max = text.bytes + 1 + text.tokens + template
    limit = _limit(request)
    limited = limit is not None
    if "messages" not in request and "prompt" not in request:
        return Tokens(prompt, 0, limited, prompt_max, 0, 0)  # embeddings: no completion
    choices = 1
    for name in ("n", "best_of"):  # completions' best_of: generated, though not all returned
        value = request.get(name)
        if type(value) is int and value > choices:
            choices = value
    ceiling = limit or context_length or completion_ceiling
    if context_length:
        ceiling = min(ceiling, context_length)
    estimate = limit or DEFAULT_COMPLETION_TOKENS
    return Tokens(prompt, choices * estimate, limited, prompt_max, choices * ceiling, choices)
