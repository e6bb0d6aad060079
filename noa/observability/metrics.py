"""Prometheus metrics: cheap counters on the hot path, summed across replicas, rendered once.

Each Gateway replica counts into plain dictionaries keyed by label values (one event loop, no
locks: an increment is a dictionary update). ``Metrics.snapshot()`` gives the cumulative
values as plain data; replicas hand their snapshots to one place (the metrics actor), where
``merge`` adds them up and ``render`` writes the text exposition format through
``prometheus_client``, so one scrape shows the totals of every replica. Label values are route
templates, provider and model names and fixed enumerations: nothing unbounded.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.core import (
    Metric as Family,
)

Kind = Literal["counter", "gauge", "histogram"]
Labels = tuple[str, ...]
# name -> label values -> a value, or for a histogram [per-bucket counts..., +Inf count, sum]
Snapshot = dict[str, dict[Labels, float | list[float]]]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)


@dataclass(frozen=True)
class Spec:
    name: str
    kind: Kind
    help: str
    labels: Labels = ()
    buckets: tuple[float, ...] = ()
    merge: Literal["sum", "max"] = "sum"  # how replicas' values combine (gauges)


SPECS = (
    Spec("http_requests_total", "counter", "HTTP requests answered", ("method", "path", "status")),
    Spec(
        "http_errors_total",
        "counter",
        "HTTP requests answered with an error, by error category (client, external, server)",
        ("method", "path", "error_category"),
    ),
    Spec(
        "http_request_duration_seconds",
        "histogram",
        "Time from request to the end of the response",
        ("method", "path"),
        LATENCY_BUCKETS,
    ),
    Spec("http_active_connections", "gauge", "Requests in progress"),
    Spec(
        "ai_provider_requests_total",
        "counter",
        "Calls to a provider, by outcome (HTTP-style status)",
        ("provider", "model", "status"),
    ),
    Spec(
        "ai_provider_latency_seconds",
        "histogram",
        "Duration of provider calls",
        ("provider", "model"),
        LATENCY_BUCKETS,
    ),
    Spec(
        "ai_provider_cost_total", "counter", "Cost in USD of answered calls", ("provider", "model")
    ),
    Spec(
        "ai_provider_tokens_total",
        "counter",
        "Tokens by direction (input, output)",
        ("provider", "model", "direction"),
    ),
    Spec(
        "ai_provider_time_to_first_token_seconds",
        "histogram",
        "Time to the first streamed token",
        ("provider", "model"),
        LATENCY_BUCKETS,
    ),
    Spec(
        "noa_gateway_overhead_seconds",
        "histogram",
        "Time of a JSON answer not spent waiting on a provider (admission, routing, cache,"
        " accounting; the HTTP layer around them is in http_request_duration_seconds)",
        ("operation",),
        OVERHEAD_BUCKETS,
    ),
    Spec(
        "noa_cache_lookups_total",
        "counter",
        "Response cache lookups by tier and outcome (hit, miss, error, skipped)",
        ("tier", "outcome"),
    ),
    Spec(
        "noa_cache_flights_total",
        "counter",
        "Replicas' first misses of a key at the shared single flight: led (went upstream),"
        " joined (took another replica's answer), waited_out, error (shared tier down)",
        ("outcome",),
    ),
    Spec(
        "noa_rate_limit_rejections_total",
        "counter",
        "Requests refused by limits or budgets",
        ("reason",),
    ),
    Spec(
        "noa_breaker_state",
        "gauge",
        "Circuit breaker state per provider upstream (0 closed, 1 half-open, 2 open)",
        ("provider", "upstream"),
        merge="max",
    ),
    Spec("noa_fallbacks_total", "counter", "Answers served by a later link of a chain", ("model",)),
    # every replica reporting the depth reads it from the same database: the largest, not a sum
    Spec("noa_queue_depth", "gauge", "Jobs waiting per queue", ("queue",), merge="max"),
    Spec("noa_jobs_total", "counter", "Finished jobs by outcome", ("queue", "outcome")),
    Spec(
        "noa_job_latency_seconds",
        "histogram",
        "Job latency by phase: queued (due to first start), run (first start to finish),"
        " total (submitted to finished)",
        ("queue", "phase"),
        JOB_BUCKETS,
    ),
    Spec(
        "noa_webhook_deliveries_total",
        "counter",
        "Webhook delivery attempts by subject kind (job, batch) and outcome (delivered,"
        " retried, failed)",
        ("kind", "outcome"),
    ),
    Spec(
        "noa_bridge_messages_total",
        "counter",
        "Broker messages a queue bridge took, by outcome (stored: a new job; duplicate: a"
        " redelivery that found its job; dead_letter: poison, to the dead-letter destination)",
        ("bridge", "outcome"),
    ),
    Spec(
        "noa_bridge_results_total",
        "counter",
        "Answers a queue bridge published, by kind (reply, dead_letter) and outcome (published,"
        " retried, failed)",
        ("bridge", "kind", "outcome"),
    ),
    Spec(
        "noa_bridge_latency_seconds",
        "histogram",
        "From a bridge's message stored as a job to its result published on the broker",
        ("bridge",),
        JOB_BUCKETS,
    ),
    # every replica of a bridge reads the same source: the largest, not a sum
    Spec(
        "noa_bridge_lag", "gauge", "Messages waiting at a bridge's source", ("bridge",), merge="max"
    ),
    Spec("noa_bridge_in_flight", "gauge", "Messages a bridge holds unacknowledged", ("bridge",)),
    Spec("noa_bridge_connected", "gauge", "Bridge replicas connected to their broker", ("bridge",)),
    Spec(
        "noa_metrics_replicas",
        "gauge",
        "Replicas (Gateways, job runners, bridges) reporting into this scrape",
    ),
)


@dataclass
class Metric:
    spec: Spec
    values: dict[Labels, float] = field(default_factory=dict)
    histograms: dict[Labels, list[float]] = field(default_factory=dict)

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value

    def observe(self, labels: Labels, value: float) -> None:
        counts = self.histograms.get(labels)
        if counts is None:
            counts = self.histograms[labels] = [0.0] * (len(self.spec.buckets) + 2)
        counts[bisect.bisect_left(self.spec.buckets, value)] += 1  # le is inclusive
        counts[-1] += value

    def snapshot(self) -> dict[Labels, float | list[float]]:
        if self.spec.kind == "histogram":
            return {k: list(v) for k, v in self.histograms.items()}
        return dict(self.values)


class Metrics:
    """One replica's metrics, by name (``metrics["http_requests_total"].inc(...)``), plus
    sources: parts that keep their own cumulative counts (the cache's per-tier stats) and are
    read only when a snapshot is taken."""

    def __init__(
        self, specs: Iterable[Spec] = SPECS, sources: Iterable[Callable[[], Snapshot]] = ()
    ) -> None:
        self.specs = tuple(specs)
        self._metrics = {spec.name: Metric(spec) for spec in self.specs}
        self._sources = tuple(sources)

    def __getitem__(self, name: str) -> Metric:
        return self._metrics[name]

    def snapshot(self) -> Snapshot:
        own = {name: metric.snapshot() for name, metric in self._metrics.items()}
        if not self._sources:
            return own
        return merge([own, *(source() for source in self._sources)], self.specs)


CACHE_OUTCOMES = {"hits": "hit", "misses": "miss", "errors": "error", "skipped": "skipped"}
FLIGHT_OUTCOMES = {"errors": "error"}


def cache_series(stats: dict[str, Any]) -> Snapshot:
    """``ResponseCache.stats()`` as ``noa_cache_lookups_total`` and
    ``noa_cache_flights_total`` series."""
    series: dict[Labels, float | list[float]] = {}
    for tier, counts in stats.get("tiers", {}).items():
        for field_name, outcome in CACHE_OUTCOMES.items():
            series[(tier, outcome)] = float(counts[field_name])
    flights: dict[Labels, float | list[float]] = {
        (FLIGHT_OUTCOMES.get(name, name),): float(count)
        for name, count in stats.get("flights", {}).items()
    }
    return {"noa_cache_lookups_total": series, "noa_cache_flights_total": flights}


BREAKER_STATES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


def breaker_series(snapshot: dict[str, dict[str, Any]]) -> Snapshot:
    """``Breakers.snapshot()`` (keys ``provider/upstream``) as ``noa_breaker_state``."""
    series: dict[Labels, float | list[float]] = {}
    for key, breaker in snapshot.items():
        provider, _, upstream = key.partition("/")
        series[(provider, upstream)] = BREAKER_STATES.get(str(breaker.get("state")), 0.0)
    return {"noa_breaker_state": series}


def merge(snapshots: Iterable[Snapshot], specs: Iterable[Spec] = SPECS) -> Snapshot:
    """The replicas' snapshots added up (gauges with ``merge="max"`` take the largest)."""
    by_name = {spec.name: spec for spec in specs}
    total: Snapshot = {name: {} for name in by_name}
    for snapshot in snapshots:
        for name, series in snapshot.items():
            spec = by_name.get(name)
            if spec is None:
                continue
            into = total[name]
            for labels, value in series.items():
                labels = tuple(labels)
                known = into.get(labels)
                if isinstance(value, list):
                    if isinstance(known, list) and len(known) == len(value):
                        into[labels] = [a + b for a, b in zip(known, value, strict=True)]
                    else:
                        into[labels] = list(value)
                elif known is None or isinstance(known, list):
                    into[labels] = value
                elif spec.merge == "max":
                    into[labels] = max(known, value)
                else:
                    into[labels] = known + value
    return total


def _families(snapshot: Snapshot, specs: Iterable[Spec]) -> Iterator[Family]:
    for spec in specs:
        series = snapshot.get(spec.name, {})
        names = list(spec.labels)
        if spec.kind == "histogram":
            hist = HistogramMetricFamily(spec.name, spec.help, labels=names)
            for labels, counts in sorted(series.items()):
                assert isinstance(counts, list)
                cumulative, running = [], 0.0
                for bound, count in zip((*spec.buckets, float("inf")), counts[:-1], strict=True):
                    running += count
                    cumulative.append((_bound(bound), running))
                hist.add_metric(list(labels), cumulative, counts[-1])
            yield hist
            continue
        base = spec.name.removesuffix("_total")
        family: CounterMetricFamily | GaugeMetricFamily = (
            CounterMetricFamily(base, spec.help, labels=names)
            if spec.kind == "counter"
            else GaugeMetricFamily(spec.name, spec.help, labels=names)
        )
        for labels, value in sorted(series.items()):
            assert not isinstance(value, list)
            family.add_metric(list(labels), value)
        yield family


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class _Collector:
    def __init__(self, snapshot: Snapshot, specs: Iterable[Spec]) -> None:
        self.snapshot = snapshot
        self.specs = tuple(specs)

    def collect(self) -> Iterator[Family]:
        return _families(self.snapshot, self.specs)


def render(snapshot: Snapshot, specs: Iterable[Spec] = SPECS) -> bytes:
    """The Prometheus text exposition of ``snapshot``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot, specs))  # type: ignore[arg-type]
    return generate_latest(registry)


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsBoard:
    """Where replicas' snapshots meet (held by one actor): the latest of each replica, added up.

    A replica that stopped reporting (gone, or restarted under a new id) keeps its counters and
    histograms in the totals, so no total ever goes down; after ``stale_s`` its gauges stop
    counting (its requests are no longer in progress anywhere)."""

    def __init__(
        self,
        specs: Iterable[Spec] = SPECS,
        stale_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.specs = tuple(specs)
        self.stale_s = stale_s
        self.clock = clock
        self._latest: dict[str, tuple[float, Snapshot]] = {}
        self._gauges = {spec.name for spec in self.specs if spec.kind == "gauge"}

    def report(self, replica: str, snapshot: Snapshot) -> None:
        self._latest[replica] = (self.clock(), snapshot)

    def live(self) -> int:
        now = self.clock()
        return sum(1 for at, _ in self._latest.values() if now - at <= self.stale_s)

    def total(self) -> Snapshot:
        now = self.clock()
        snapshots = []
        for at, snapshot in self._latest.values():
            if now - at > self.stale_s:
                snapshot = {k: v for k, v in snapshot.items() if k not in self._gauges}
            snapshots.append(snapshot)
        total = merge(snapshots, self.specs)
        if "noa_metrics_replicas" in total:
            total["noa_metrics_replicas"] = {(): float(self.live())}
        return total
