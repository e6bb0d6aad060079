"""Request bodies of the OpenAI wire protocol, as pydantic models.

They follow OpenAI's own OpenAPI description (ranges, required fields). Unknown top-level fields
are kept (``extra="allow"``) and passed to providers that understand them, as a gateway must:
provider-specific extras are part of the request.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from noa.wire.fields import MAX_INT32, Int64, Name, TokenCount, TokenId
from noa.wire.json_bounds import BoundedJson

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class _Body(_Open, BoundedJson):
    """A whole request body (nested parts are ``_Open``)."""


class StreamOptions(_Open):
    include_usage: bool | None = None


class ChatMessage(_Open):
    """One message; content is a string, a list of content parts, or null (tool calls)."""

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


def _non_empty_input(schema: dict[str, Any]) -> None:
    """OpenAPI says what ``EmbeddingRequest._not_empty`` checks: no empty string or list."""
    for option in schema.get("anyOf", []):
        if option.get("type") == "string":
            option["minLength"] = 1
        elif option.get("type") == "array":
            option["minItems"] = 1
            _non_empty_input({"anyOf": [option.get("items", {})]})


_TOOL_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "default": "function"},
        "function": {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
        },
    },
    "required": ["function"],
}


def _tools_schema(schema: dict[str, Any]) -> None:
    """OpenAPI says what ``_tools_have_functions`` checks: a function tool names its function."""
    for option in schema.get("anyOf", []):
        if option.get("type") == "array":
            option["items"] = _TOOL_SCHEMA


Stop = str | Annotated[list[str], Field(max_length=16)] | None
LogitBias = dict[str, Annotated[float, Field(ge=-100, le=100)]]
Tokens = list[TokenId] | list[list[TokenId]]


class ChatCompletionRequest(_Body):
    """``POST /v1/chat/completions``."""

    model: Name
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    max_tokens: TokenCount | None = Field(None, ge=1)
    max_completion_tokens: TokenCount | None = Field(None, ge=1)
    stop: Stop = None
    seed: Int64 | None = None
    user: str | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: LogitBias | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = Field(None, json_schema_extra=_tools_schema)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("tools")
    @classmethod
    def _tools_have_functions(cls, tools: list[dict[str, Any]] | None) -> Any:
        for i, tool in enumerate(tools or []):
            if tool.get("type", "function") == "function":
                fn = tool.get("function")
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise ValueError(f"tools[{i}].function.name is required")
        return tools


class CompletionRequest(_Body):
    """``POST /v1/completions`` (legacy text completions)."""

    model: Name
    prompt: str | list[str] | Tokens
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: TokenCount | None = Field(16, ge=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    stop: Stop = None
    seed: Int64 | None = None
    user: str | None = None
    echo: bool | None = None
    suffix: str | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: LogitBias | None = None
    best_of: int | None = Field(None, ge=0, le=20)


class EmbeddingRequest(_Body):
    """``POST /v1/embeddings``."""

    model: Name
    input: str | list[str] | Tokens = Field(json_schema_extra=_non_empty_input)
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(None, ge=1, le=MAX_INT32)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("input must not be an empty list")
        if isinstance(value, list) and any(v == "" or v == [] for v in value):
            raise ValueError("input must not contain empty strings")
        if value == "":
            raise ValueError("input must not be an empty string")
        return value


def dump(request: BaseModel) -> dict[str, Any]:
    """The request as a plain dict with only what the client set (extras included)."""
    return request.model_dump(exclude_unset=True, exclude_none=True)
