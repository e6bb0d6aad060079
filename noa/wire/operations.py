"""What NOA can be asked to do: one vocabulary of operations, shared by every layer.

An ``Operation`` names a kind of request (its value is what metrics, usage records and the
registry's capabilities call it). Each one has its request model here; whether it can stream
is part of it. A provider says which operations it answers in a table of its own
(``Provider.answers`` / ``Provider.streams``), so a new operation is one entry here, one HTTP
route, and a handler in each provider that serves it, not a new method in every layer.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

from noa.wire.requests import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, dump
from noa.wire.validation import parse

Body = dict[str, Any]


class Operation(enum.StrEnum):
    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"


REQUEST_MODELS: Mapping[Operation, type[BaseModel]] = MappingProxyType(
    {
        Operation.CHAT: ChatCompletionRequest,
        Operation.COMPLETIONS: CompletionRequest,
        Operation.EMBEDDINGS: EmbeddingRequest,
    }
)
STREAMING = frozenset({Operation.CHAT, Operation.COMPLETIONS})


def validated(operation: Operation, body: Any) -> Body:
    """A raw body (a Python caller's dict) checked as the HTTP API checks it: what the client
    set, as the providers get it. A 400 naming the first offending field otherwise."""
    return dump(parse(REQUEST_MODELS[operation], body))


def streamed(operation: Operation, body: Body) -> bool:
    return operation in STREAMING and bool(body.get("stream"))
