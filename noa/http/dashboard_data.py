"""What the dashboard shows, computed from one metrics snapshot (every replica's totals).

Counts and sums are cumulative; the page turns them into rates from one poll to the next.
Latency percentiles are estimated from histogram buckets by linear interpolation within the
bucket, as Prometheus's ``histogram_quantile`` does.
"""

from __future__ import annotations

from typing import Any

from noa.observability.metrics import LATENCY_BUCKETS, Snapshot

ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


def _counts(snapshot: Snapshot, name: str) -> dict[tuple[str, ...], float]:
    return {k: v for k, v in snapshot.get(name, {}).items() if not isinstance(v, list)}


def quantile(q: float, counts: list[float], bounds: tuple[float, ...]) -> float | None:
    """``histogram_quantile`` over per-bucket counts (the last two entries: +Inf and sum)."""
    per_bucket = counts[: len(bounds) + 1]
    total = sum(per_bucket)
    if total <= 0:
        return None
    rank, running, lower = q * total, 0.0, 0.0
    for bound, count in zip((*bounds, float("inf")), per_bucket, strict=True):
        if running + count >= rank and count > 0:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - running) / count
        running += count
        lower = bound
    return lower


def _latency(snapshot: Snapshot) -> dict[str, float | None]:
    merged = [0.0] * (len(LATENCY_BUCKETS) + 2)
    for (_, path), counts in snapshot.get("http_request_duration_seconds", {}).items():
        if path in ROUTES and isinstance(counts, list):
            merged = [a + b for a, b in zip(merged, counts, strict=True)]
    return {
        f"p{int(q * 100)}_ms": None
        if (v := quantile(q, merged, LATENCY_BUCKETS)) is None
        else v * 1000
        for q in (0.5, 0.95, 0.99)
    }


def bridges(snapshot: Snapshot) -> dict[str, dict[str, float]]:
    """Each queue bridge: replicas connected, lag, messages held, taken and answered."""
    out: dict[str, dict[str, float]] = {}

    def of(name: str) -> dict[str, float]:
        return out.setdefault(
            name,
            {"connected": 0, "lag": 0, "in_flight": 0, "stored": 0, "duplicate": 0,
             "dead_letter": 0, "published": 0},
        )  # fmt: skip

    for gauge, field in (
        ("noa_bridge_connected", "connected"),
        ("noa_bridge_lag", "lag"),
        ("noa_bridge_in_flight", "in_flight"),
    ):
        for (name,), v in _counts(snapshot, gauge).items():
            of(name)[field] = v
    for (name, outcome), v in _counts(snapshot, "noa_bridge_messages_total").items():
        of(name)[outcome] = of(name).get(outcome, 0) + v
    for (name, _, outcome), v in _counts(snapshot, "noa_bridge_results_total").items():
        if outcome == "published":
            of(name)["published"] += v
    return out


def summarize(snapshot: Snapshot, providers: dict[str, Any] | None = None) -> dict[str, Any]:
    requests = _counts(snapshot, "http_requests_total")
    api = {k: v for k, v in requests.items() if k[1] in ROUTES}
    errors = sum(v for (_, _, status), v in api.items() if int(status) >= 400)
    total = sum(api.values())
    lookups = _counts(snapshot, "noa_cache_lookups_total")
    first_tier = min((tier for tier, _ in lookups), default=None)
    looked_up = sum(
        v for (tier, o), v in lookups.items() if tier == first_tier and o in ("hit", "miss")
    )
    hits = sum(v for (_, outcome), v in lookups.items() if outcome == "hit")
    models: dict[str, dict[str, Any]] = {}

    def row(provider: str, model: str) -> dict[str, Any]:
        return models.setdefault(
            f"{model}\t{provider}",
            {"model": model, "provider": provider, "requests": 0, "errors": 0},
        )

    for (provider, model, status), v in _counts(snapshot, "ai_provider_requests_total").items():
        row(provider, model)["requests"] += v
        if int(status) >= 400:
            row(provider, model)["errors"] += v
    for (provider, model, direction), v in _counts(snapshot, "ai_provider_tokens_total").items():
        found = row(provider, model)
        found[f"tokens_{direction}"] = found.get(f"tokens_{direction}", 0) + v
    for (provider, model), v in _counts(snapshot, "ai_provider_cost_total").items():
        found = row(provider, model)
        found["cost_usd"] = found.get("cost_usd", 0) + v
    breakers = {
        f"{p}/{u}": ("closed", "half_open", "open")[min(2, int(v))]
        for (p, u), v in _counts(snapshot, "noa_breaker_state").items()
    }
    return {
        "requests_total": total,
        "errors_total": errors,
        "error_rate": errors / total if total else 0.0,
        "in_progress": sum(_counts(snapshot, "http_active_connections").values()),
        "latency": _latency(snapshot),
        "cache": {
            "hits": hits,
            "lookups": looked_up,
            "hit_rate": hits / looked_up if looked_up else 0.0,
        },
        "models": [models[k] for k in sorted(models)],
        "breakers": breakers,
        "queues": {q: v for (q,), v in _counts(snapshot, "noa_queue_depth").items()},
        "bridges": bridges(snapshot),
        "rate_limited": sum(_counts(snapshot, "noa_rate_limit_rejections_total").values()),
        "replicas": sum(_counts(snapshot, "noa_metrics_replicas").values()) or 1,
        "providers": {
            name: {"status": p.get("status", "unknown"), "latency_ms": p.get("latency_ms")}
            for name, p in (providers or {}).items()
        },
    }
