"""The autoscaling policy of a queue bridge's deployment: as many replicas as its source's
lag needs, ``ceil(lag / lag_per_replica)`` (both reported by every replica through
``record_autoscaling_stats``; the lag is the broker's, the same for every replica, so the
largest report counts). Serve applies the deployment's bounds and up/downscale delays around
it. Referenced by import path from the deployment's ``autoscaling_config.policy``.
"""

from __future__ import annotations

import math
from typing import Any


def desired_replicas(lag: float, lag_per_replica: float, minimum: int) -> int:
    """Replicas for ``lag`` waiting messages, never under ``minimum``."""
    if lag <= 0:
        return minimum
    return max(minimum, math.ceil(lag / max(1.0, lag_per_replica)))


def lag_policy(ctx: Any) -> tuple[int, dict[str, Any]]:
    """Serve's custom policy hook: ``ctx`` is its ``AutoscalingContext``."""
    metrics = ctx.aggregated_metrics or {}
    lag = max((float(v) for v in metrics.get("lag", {}).values()), default=0.0)
    per = max((float(v) for v in metrics.get("lag_per_replica", {}).values()), default=1000.0)
    minimum = max(1, int(ctx.capacity_adjusted_min_replicas))
    if not metrics.get("lag"):  # no report yet (replicas starting): keep what runs
        return max(minimum, int(ctx.current_num_replicas)), {}
    return desired_replicas(lag, per, minimum), {}
