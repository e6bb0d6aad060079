"""Replica metrics: counted cheaply, summed across replicas, rendered in a format Prometheus's
own parser reads back."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from clocks import ManualClock
from prometheus_client.parser import text_string_to_metric_families

from noa.http.dashboard_data import quantile, summarize
from noa.observability.metrics import (
    LATENCY_BUCKETS,
    Metrics,
    MetricsBoard,
    breaker_series,
    cache_series,
    merge,
    render,
)


def parsed(text: bytes) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def replica(
    requests: int, latency_s: float, breaker: float, sources: tuple[Any, ...] = ()
) -> Metrics:
    metrics = Metrics(sources=sources)
    for _ in range(requests):
        metrics["http_requests_total"].inc(("POST", "/v1/chat/completions", "200"))
        metrics["http_request_duration_seconds"].observe(("POST", "/v1/chat/completions"), 0.004)
        metrics["ai_provider_latency_seconds"].observe(("openai", "gpt-x"), latency_s)
        metrics["ai_provider_cost_total"].inc(("openai", "gpt-x"), 0.25)
    metrics["http_errors_total"].inc(("POST", "/v1/chat/completions", "client"))
    metrics["http_active_connections"].set((), 2)
    metrics["noa_breaker_state"].set(("openai", "gpt-x"), breaker)
    metrics["ai_provider_tokens_total"].inc(('odd "name"\n', "m", "input"), 7)
    return metrics


def test_two_replicas_add_up_in_one_scrape() -> None:
    a, b = replica(3, 0.2, 0.0), replica(5, 3.0, 2.0)
    # snapshots travel between processes (pickled by Ray), so they must survive the trip
    total = merge([pickle.loads(pickle.dumps(a.snapshot())), b.snapshot()])
    samples = parsed(render(total))
    route = (("method", "POST"), ("path", "/v1/chat/completions"))
    assert samples["http_requests_total"][(*route, ("status", "200"))] == 8
    assert samples["http_errors_total"][(("error_category", "client"), *route)] == 2
    assert samples["http_request_duration_seconds_count"][route] == 8
    assert samples["http_active_connections"][()] == 4  # in progress on either replica
    assert samples["noa_breaker_state"][(("provider", "openai"), ("upstream", "gpt-x"))] == 2
    assert samples["ai_provider_cost_total"][(("model", "gpt-x"), ("provider", "openai"))] == 2.0
    odd = (("direction", "input"), ("model", "m"), ("provider", 'odd "name"\n'))
    assert samples["ai_provider_tokens_total"][odd] == 14  # escaped and read back intact


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    total = merge([replica(3, 0.25, 0).snapshot(), replica(5, 3.0, 0).snapshot()])
    buckets = parsed(render(total))["ai_provider_latency_seconds_bucket"]
    labels = (("model", "gpt-x"), ("provider", "openai"))

    def at(le: str) -> float:
        return buckets[(("le", le), *labels)]

    assert at("0.1") == 0 and at("0.25") == 3  # 0.25 falls in le="0.25"
    assert at("2.5") == 3 and at("5.0") == 8 and at("+Inf") == 8
    assert len([k for k in buckets if ("model", "gpt-x") in k]) == len(LATENCY_BUCKETS) + 1
    sums = parsed(render(total))["ai_provider_latency_seconds_sum"]
    assert sums[labels] == 3 * 0.25 + 5 * 3.0


def test_an_empty_scrape_still_declares_every_metric() -> None:
    text = render(merge([])).decode()
    for name in ("http_requests_total", "ai_provider_requests_total", "noa_queue_depth"):
        assert f"# TYPE {name.removesuffix('_total')}" in text
    assert parsed(render(merge([]))) == {}


class Clock(ManualClock):
    start = 100.0


def test_the_board_keeps_a_gone_replicas_counts_but_not_its_gauges() -> None:
    clock = Clock()
    board = MetricsBoard(stale_s=30, clock=clock)
    board.report("r1", replica(3, 0.1, 0).snapshot())
    board.report("r2", replica(5, 0.1, 0).snapshot())
    board.report("r2", replica(6, 0.1, 0).snapshot())  # cumulative: the latest replaces
    samples = parsed(render(board.total()))
    route = (("method", "POST"), ("path", "/v1/chat/completions"), ("status", "200"))
    assert samples["http_requests_total"][route] == 9
    assert samples["http_active_connections"][()] == 4
    assert samples["noa_metrics_replicas"][()] == 2
    clock.now += 31
    board.report("r2", replica(7, 0.1, 0).snapshot())
    samples = parsed(render(board.total()))
    assert samples["http_requests_total"][route] == 10  # r1's 3 stay counted
    assert samples["http_active_connections"][()] == 2  # only r2's in progress now
    assert samples["noa_metrics_replicas"][()] == 1


def test_cache_stats_and_breaker_states_as_series() -> None:
    stats = {"tiers": {"l1": {"hits": 3, "misses": 1, "errors": 0, "skipped": 0, "down": False}}}
    assert cache_series(stats)["noa_cache_lookups_total"] == {
        ("l1", "hit"): 3.0,
        ("l1", "miss"): 1.0,
        ("l1", "error"): 0.0,
        ("l1", "skipped"): 0.0,
    }
    flights = {"led": 2, "joined": 5, "waited_out": 0, "errors": 1}
    assert cache_series(stats | {"flights": flights})["noa_cache_flights_total"] == {
        ("led",): 2.0,
        ("joined",): 5.0,
        ("waited_out",): 0.0,
        ("error",): 1.0,
    }
    breakers = {"openai/gpt-x": {"state": "open"}, "local/s": {"state": "half_open"}}
    assert breaker_series(breakers)["noa_breaker_state"] == {
        ("openai", "gpt-x"): 2.0,
        ("local", "s"): 1.0,
    }
    metrics = Metrics(sources=[lambda: cache_series(stats)])
    metrics["http_active_connections"].inc()
    snapshot = metrics.snapshot()
    assert snapshot["noa_cache_lookups_total"][("l1", "hit")] == 3.0
    assert snapshot["http_active_connections"] == {(): 1.0}


def test_dashboard_summary_quantiles_rates_and_models() -> None:
    bounds = (0.1, 0.2, 0.4)
    assert quantile(0.5, [0, 10, 0, 0, 1.5], bounds) == pytest.approx(0.15)  # inside (0.1, 0.2]
    assert quantile(0.99, [0, 0, 0, 4, 9.0], bounds) == 0.4  # in +Inf: the last finite bound
    assert quantile(0.5, [0, 0, 0, 0, 0], bounds) is None
    tiers = {"tiers": {"l1": {"hits": 1, "misses": 3, "errors": 0, "skipped": 0}}}
    metrics = replica(4, 0.2, 2.0, sources=(lambda: cache_series(tiers),))
    metrics["http_requests_total"].inc(("POST", "/v1/chat/completions", "429"))
    metrics["ai_provider_requests_total"].inc(("openai", "gpt-x", "200"), 3)
    summary = summarize(merge([metrics.snapshot()]), {"openai": {"status": "ok", "latency_ms": 3}})
    assert summary["requests_total"] == 5 and summary["errors_total"] == 1
    assert summary["error_rate"] == pytest.approx(0.2)
    assert summary["cache"] == {"hits": 1.0, "lookups": 4.0, "hit_rate": 0.25}
    assert summary["breakers"] == {"openai/gpt-x": "open"}
    assert summary["models"][0] | {"cost_usd": 1.0} == {
        "model": "gpt-x",
        "provider": "openai",
        "requests": 3.0,
        "errors": 0,
        "cost_usd": 1.0,
    }
    assert summary["latency"]["p50_ms"] is not None
    assert summary["providers"] == {"openai": {"status": "ok", "latency_ms": 3}}
