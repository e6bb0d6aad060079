"""Field types of request bodies whose values go on to stores, headers and upstreams.

Names (models, teams, keys) end up in HTTP headers, database rows and log lines, so they are
refused when they hold control characters (C0, DEL, C1: NUL included) or lone UTF-16 surrogates,
which no header, no UTF-8 column and no JSON encoder can carry. Numbers are bounded to what
the stores and providers hold: token counts and dimensions to 32 bits, seeds to signed 64
bits; floats are finite (the models set ``allow_inf_nan=False``).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

MAX_INT32 = 2**31 - 1
MIN_INT64, MAX_INT64 = -(2**63), 2**63 - 1
MAX_NAME = 256

# C0 controls, DEL, C1 controls, and UTF-16 surrogates (only lone ones survive decoding)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a name, or None."""
    found = _UNSAFE.search(value)
    if found is None:
        return None
    char = found.group()
    what = "a lone UTF-16 surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
    return f"must not contain {what} ({char!a} at {found.start()})"


def storable(value: str) -> bool:
    """Whether every store can hold (and look up) ``value``: PostgreSQL refuses NUL in text,
    UTF-8 cannot carry a lone surrogate."""
    return _UNSTORABLE.search(value) is None


def _name(value: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise PydanticCustomError("name_invalid", problem)
    return value


NAME_PATTERN = "^[^\x00-\x1f\x7f-\x9f]+$"
"""What OpenAPI says of a name (the validator also refuses lone surrogates, which JSON Schema
patterns cannot name)."""

Name = Annotated[
    str,
    Field(min_length=1, max_length=MAX_NAME, json_schema_extra={"pattern": NAME_PATTERN}),
    AfterValidator(_name),
]
"""A model, team or key name: 1 to 256 characters, none of them a control character."""

# ``lt=2**63``, not ``le=MAX_INT64``: OpenAPI writes bounds as floats, and 2**63 - 1 as a float
# is 2**63, which would tell clients (and the fuzzer) that 2**63 is a valid seed
Int64 = Annotated[int, Field(ge=MIN_INT64, lt=MAX_INT64 + 1)]
TokenId = Annotated[int, Field(ge=0, le=MAX_INT32)]
TokenCount = Annotated[int, Field(le=MAX_INT32)]
