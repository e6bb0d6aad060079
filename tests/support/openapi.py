"""Validate response bodies against OpenAI's own OpenAPI description.

The description (``tests/data``) mixes OpenAPI 3.0's ``nullable: true`` into 3.1 schemas; it is
read with 3.0's meaning (null allowed) so that jsonschema's draft 2020-12 applies it as OpenAI
intends.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_ENV = "NOA_OPENAI_SPEC"
# OpenAI's description (MIT, licence beside it), vendored so the tests stand alone.
SPEC_FILE = Path(__file__).resolve().parents[1] / "data" / "openai-openapi.yaml"


def spec_path() -> Path:
    return Path(os.environ.get(SPEC_ENV) or SPEC_FILE)


def _nullable(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _nullable(v) for k, v in node.items()}
        if node.pop("nullable", False):
            t = node.get("type")
            if isinstance(t, str):
                node["type"] = [t, "null"]
            elif isinstance(t, list) and "null" not in t:
                node["type"] = [*t, "null"]
            if "enum" in node and None not in node["enum"]:
                node["enum"] = [*node["enum"], None]
            if "type" not in node and "enum" not in node:
                return {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


@functools.lru_cache(maxsize=1)
def _spec() -> tuple[dict[str, Any], Registry]:
    spec = _nullable(yaml.safe_load(spec_path().read_text()))
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    return spec, Registry().with_resource("openai", resource)


def validate(schema_name: str, instance: Any) -> None:
    """Raise jsonschema.ValidationError unless ``instance`` matches the named schema."""
    spec, registry = _spec()
    if schema_name not in spec["components"]["schemas"]:
        raise KeyError(schema_name)
    schema = {"$ref": f"openai#/components/schemas/{schema_name}"}
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    errors = sorted(validator.iter_errors(instance), key=lambda e: e.path)
    if errors:
        raise errors[0]
