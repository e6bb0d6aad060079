"""What a key or team record may hold: checked before it is stored, read back defensively.

``check_record`` refuses what a column could not hold or a listing could not show;
``stored_metadata`` reads a record's metadata so that one bad record, stored before the check
existed, never breaks a listing.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from noa.storage.db import Row
from noa.wire.fields import MAX_INT64, name_problem

if TYPE_CHECKING:
    from noa.access.keys import Limits

logger = logging.getLogger("noa.keys")


class RecordError(ValueError):
    """A key or team that cannot be stored as given (the message says why)."""


def check_record(
    names: Mapping[str, str | None],
    models: Sequence[str] | None,
    limits: Limits,
    metadata: Mapping[str, Any] | None,
) -> None:
    """Refuse what a column could not hold or a listing could not show: names with control
    characters, integers beyond 64 bits, metadata that is not plain JSON (NaN, lone
    surrogates, huge integers). The admin API checks most of it at its edge; this guards
    every caller."""
    for what, value in [*names.items(), *(("models", m) for m in models or ())]:
        problem = None if value is None else name_problem(value)
        if problem is not None:
            raise RecordError(f"{what} {problem}")
    for what, number in (("rpm", limits.rpm), ("tpm", limits.tpm)):
        if number is not None and not 0 < number <= MAX_INT64:
            raise RecordError(f"{what} must be between 1 and {MAX_INT64}")
    if limits.budget_usd is not None and not math.isfinite(limits.budget_usd):
        raise RecordError("budget_usd must be a finite number")
    try:
        json.dumps(dict(metadata or {}), allow_nan=False)
        orjson.dumps(dict(metadata or {}))
    except (ValueError, TypeError, orjson.JSONEncodeError) as e:
        raise RecordError(f"metadata cannot be stored: {e}") from None


def stored_metadata(row: Row) -> dict[str, Any]:
    """A record's metadata; metadata stored before it was checked, that the admin API could
    not show, is left out (and logged) so that one record never breaks a listing."""
    try:
        metadata = json.loads(row["metadata"] or "{}")
        orjson.dumps(metadata)
    except (ValueError, TypeError, orjson.JSONEncodeError) as e:
        logger.warning("unreadable metadata of %s left out: %s", row["id"], e)
        return {}
    return metadata if isinstance(metadata, dict) else {}
