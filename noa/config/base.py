"""What every part of NOA's configuration is built from: strict models and env secrets."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, SecretStr


class Strict(BaseModel):
    """Unknown keys are errors; a parsed configuration never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def env_secret(name: str, environ: Mapping[str, str] | None) -> SecretStr | None:
    """The value of the environment variable ``name``, if set and not blank."""
    value = (environ if environ is not None else os.environ).get(name, "").strip()
    return SecretStr(value) if value else None
