"""schemathesis hooks for the suite's fuzz run (loaded through ``SCHEMATHESIS_HOOKS``).

Random model names all end in a 404 before any work, so bodies and model paths are sometimes
given the name of a model the server under test serves (``NOA_FUZZ_MODELS``, comma-separated).
Bodies for the Anthropic ones (``NOA_FUZZ_ANTHROPIC_MODELS``), and some others, also lose what
Anthropic models refuse: an ``n`` above 1 (most drawn values are), ``function`` messages and
``tool`` ones, content parts of no type. The rest of the fuzzed body then goes through
admission, the cache, routing, the translation to the provider's format and the upstream.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import strategies as st


def _models(variable: str = "NOA_FUZZ_MODELS") -> list[str]:
    return [m for m in os.environ.get(variable, "").split(",") if m]


@schemathesis.hook
def flatmap_body(ctx: Any, body: Any) -> st.SearchStrategy[Any]:
    if not isinstance(body, dict) or "model" not in body or not _models():
        return st.just(body)
    anthropic = _models("NOA_FUZZ_ANTHROPIC_MODELS")

    def served(model: str, anthropic_safe: bool) -> dict[str, Any]:
        named = {**body, "model": model}
        if anthropic_safe or model in anthropic:
            named.pop("n", None)
            if isinstance(body.get("messages"), list):
                named["messages"] = [_plain(m) for m in body["messages"] if _anthropic_role(m)]
                named["messages"].append({"role": "user", "content": "fuzz"})
        return named

    return st.one_of(st.just(body), st.builds(served, st.sampled_from(_models()), st.booleans()))


def _anthropic_role(message: Any) -> bool:
    return isinstance(message, dict) and message.get("role") in ("system", "user", "assistant")


def _plain(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, list):
        parts = [p for p in content if isinstance(p, dict) and isinstance(p.get("type"), str)]
        return {**message, "content": parts}
    return message


@schemathesis.hook
def flatmap_path_parameters(ctx: Any, parameters: Any) -> st.SearchStrategy[Any]:
    if not isinstance(parameters, dict) or "model_id" not in parameters or not _models():
        return st.just(parameters)
    named = st.sampled_from(_models()).map(lambda model: {**parameters, "model_id": model})
    return st.one_of(st.just(parameters), named)
