"""The one interface every provider implements, in-process or behind a DeploymentHandle.

Requests and responses are plain dicts in OpenAI's wire shape, so they cross handles as they are.
``request`` is the client's body as validated (only fields the client set); ``model`` is the
model's name at the provider, already resolved by the router.

Streams yield ``chat.completion.chunk`` (or ``text_completion``) dicts. A provider that knows the
usage ends its stream with a usage chunk (``choices == []``); the gateway forwards it only when
the client asked for ``stream_options.include_usage``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from noa.errors import InvalidRequestError

Body = dict[str, Any]


class Provider(ABC):
    """A source of completions: OpenAI, Anthropic, llama.cpp, or a handle to one of them."""

    name: str
    kind: str

    @abstractmethod
    async def chat(self, request: Body, model: str) -> Body:
        """A ``chat.completion`` for a non-streaming request."""

    @abstractmethod
    def stream_chat(self, request: Body, model: str) -> AsyncGenerator[Body, None]:
        """``chat.completion.chunk`` dicts, ending with a usage chunk when usage is known."""

    async def completion(self, request: Body, model: str) -> Body:
        raise self._unsupported("text completions (/v1/completions)")

    def stream_completion(self, request: Body, model: str) -> AsyncGenerator[Body, None]:
        raise self._unsupported("text completions (/v1/completions)")

    async def stream_chat_batches(
        self, request: Body, model: str
    ) -> AsyncGenerator[list[Body], None]:
        """The stream in batches of chunks that were ready together (one per handle message).

        Across a DeploymentHandle each message costs a few hundred microseconds and can wait a
        few milliseconds behind the previous one; chunks produced together travel together.
        """
        async with aclosing(self.stream_chat(request, model)) as chunks:
            async for chunk in chunks:
                yield [chunk]

    async def stream_completion_batches(
        self, request: Body, model: str
    ) -> AsyncGenerator[list[Body], None]:
        async with aclosing(self.stream_completion(request, model)) as chunks:
            async for chunk in chunks:
                yield [chunk]

    async def embeddings(self, request: Body, model: str) -> Body:
        raise self._unsupported("embeddings")

    async def check(self) -> None:
        """A health probe that costs no tokens; raises a NoaError when the provider is down."""
        return None

    async def aclose(self) -> None:
        """Release connections and models."""
        return None

    def _unsupported(self, what: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"provider '{self.name}' ({self.kind}) does not support {what}",
            param="model",
            code="unsupported_operation",
        )
