"""Request validation failures as the 400s OpenAI sends: the first offending field named."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from noa.errors import InvalidRequestError
from noa.wire.json_bounds import TOO_DEEP, UNREPRESENTABLE


def validation_error(errors: Sequence[Mapping[str, Any]]) -> InvalidRequestError:
    """A 400 naming the first offending field, as OpenAI does (``messages.0.role``)."""
    first = errors[0]
    kind = first["type"]
    if kind == TOO_DEEP:
        return InvalidRequestError(f"{first['msg']}.", code=TOO_DEEP)
    if kind == UNREPRESENTABLE:  # somewhere inside the body: the walk named where
        where = first["ctx"]["param"] or None
        what = f"Invalid value for '{where}'" if where else "Invalid request body"
        return InvalidRequestError(f"{what}: {first['msg']}.", param=where, code="invalid_value")
    if kind == "json_invalid":
        ctx = first.get("ctx") or {}
        return InvalidRequestError(
            f"The request body is not valid JSON: {ctx.get('error', first['msg'])}",
            code="invalid_json",
        )
    param = ".".join(str(p) for p in first["loc"] if p != "body") or None
    if param is None:
        if kind == "missing":
            return InvalidRequestError("The request body is empty: expected a JSON object.")
        if isinstance(first.get("input"), bytes):  # not sent as JSON: the raw body came through
            return InvalidRequestError(
                "The request body must be JSON, sent with Content-Type: application/json.",
                code="invalid_json",
            )
        return InvalidRequestError("The request body must be a JSON object.", code="invalid_json")
    if kind == "missing":
        message = f"Missing required parameter: '{param}'."
    else:
        message = f"Invalid value for '{param}': {first['msg']}."
    return InvalidRequestError(message, param=param, code="invalid_value")


def parse(model: type[BaseModel], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise validation_error(e.errors()) from None
