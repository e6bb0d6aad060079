"""The one interface every provider implements, in-process or behind a DeploymentHandle.

Requests and responses are plain dicts in OpenAI's wire shape, so they cross handles as they are.
``request`` is the client's body as validated (only fields the client set); ``model`` is the
model's name at the provider, already resolved by the router.

A provider answers the operations of its tables: ``answers`` (one JSON body) and ``streams``
(``chat.completion.chunk`` or ``text_completion`` dicts). A provider that knows the usage ends
its stream with a usage chunk (``choices == []``); the gateway forwards it only when the client
asked for ``stream_options.include_usage``. An operation missing from a table is a 400.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from types import MappingProxyType
from typing import Any

from noa.errors import InvalidRequestError
from noa.wire.operations import Operation

Body = dict[str, Any]
Answer = Callable[[Body, str], Awaitable[Body]]
Chunks = Callable[[Body, str], AsyncGenerator[Body, None]]

WHAT = {
    Operation.CHAT: "chat completions",
    Operation.COMPLETIONS: "text completions (/v1/completions)",
    Operation.EMBEDDINGS: "embeddings",
}


class Provider(ABC):
    """A source of completions: OpenAI, Anthropic, llama.cpp, or a handle to one of them."""

    name: str
    kind: str
    answers: Mapping[Operation, Answer] = MappingProxyType({})
    streams: Mapping[Operation, Chunks] = MappingProxyType({})

    async def call(self, operation: Operation, request: Body, model: str) -> Body:
        """The JSON answer to a non-streaming request."""
        answer = self.answers.get(operation)
        if answer is None:
            raise self.unsupported(operation)
        return await answer(request, model)

    def stream(self, operation: Operation, request: Body, model: str) -> AsyncGenerator[Body, None]:
        """The chunks of a streamed answer, ending with a usage chunk when usage is known."""
        chunks = self.streams.get(operation)
        if chunks is None:
            raise self.unsupported(operation)
        return chunks(request, model)

    async def stream_batches(
        self, operation: Operation, request: Body, model: str
    ) -> AsyncGenerator[list[Body], None]:
        """The stream in batches of chunks that were ready together (one per handle message).

        Across a DeploymentHandle each message costs a few hundred microseconds and can wait a
        few milliseconds behind the previous one; chunks produced together travel together.
        """
        async with aclosing(self.stream(operation, request, model)) as chunks:
            async for chunk in chunks:
                yield [chunk]

    async def check(self) -> None:
        """A health probe that costs no tokens; raises a NoaError when the provider is down."""
        return None

    async def aclose(self) -> None:
        """Release connections and models."""
        return None

    def unsupported(self, operation: Operation) -> InvalidRequestError:
        return InvalidRequestError(
            f"provider '{self.name}' ({self.kind}) does not support {WHAT[operation]}",
            param="model",
            code="unsupported_operation",
        )
