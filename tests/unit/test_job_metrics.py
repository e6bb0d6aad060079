"""The job series: recorded through JobMetrics into a replica's Metrics, rendered in the
Prometheus text format, and merged across replicas (the depth by max, counters by sum)."""

from __future__ import annotations

from typing import Any

import pytest

from noa.jobs.job_metrics import QUEUES, JobMetrics, latencies, queue_of
from noa.jobs.model import Job, JobStatus, Priority
from noa.observability.metrics import Metrics, MetricsBoard, render

T0 = 1_763_856_000.0


def job(**fields: Any) -> Job:
    base: dict[str, Any] = {
        "id": "job_1",
        "key_id": "",
        "team": None,
        "endpoint": "/v1/embeddings",
        "body": {},
        "priority": Priority.HIGH,
        "status": JobStatus.COMPLETED,
        "run_at": T0,
        "created_at": T0,
        "updated_at": T0 + 5,
        "attempts": 1,
        "max_attempts": 3,
        "token": 1,
        "started_at": T0 + 2,
        "finished_at": T0 + 5,
    }
    return Job(**(base | fields))


def test_queue_labels() -> None:
    assert QUEUES == ("high", "medium", "low", "batch")
    assert queue_of(job()) == "high"
    assert queue_of(job(priority=Priority.LOW)) == "low"
    assert queue_of(job(priority=Priority.LOW, parent_id="batch_1")) == "batch"


def test_latencies_by_phase() -> None:
    assert latencies(job()) == {"queued": 2.0, "run": 3.0, "total": 5.0}
    delayed = job(created_at=T0 - 100, run_at=T0)  # submitted with run_at 100 s ahead
    assert latencies(delayed) == {"queued": 2.0, "run": 3.0, "total": 105.0}
    retried = job(run_at=T0 + 4)  # a retry moved run_at past the first start
    assert latencies(retried)["queued"] == 2.0
    cancelled = job(status=JobStatus.CANCELLED, started_at=None)
    assert latencies(cancelled) == {"total": 5.0}


def test_finished_jobs_are_counted_and_timed() -> None:
    metrics = Metrics()
    recorder = JobMetrics(metrics)
    recorder.finished(job())
    recorder.finished(job(status=JobStatus.DEAD, priority=Priority.LOW))
    recorder.finished(job(parent_id="batch_1"))
    text = render(metrics.snapshot()).decode()
    assert 'noa_jobs_total{outcome="completed",queue="high"} 1.0' in text
    assert 'noa_jobs_total{outcome="dead",queue="low"} 1.0' in text
    assert 'noa_jobs_total{outcome="completed",queue="batch"} 1.0' in text
    assert 'noa_job_latency_seconds_bucket{le="2.5",phase="queued",queue="high"} 1.0' in text
    assert 'noa_job_latency_seconds_bucket{le="1.0",phase="queued",queue="high"} 0.0' in text
    assert 'noa_job_latency_seconds_sum{phase="run",queue="high"} 3.0' in text
    assert 'noa_job_latency_seconds_count{phase="total",queue="batch"} 1.0' in text


def test_depth_sets_every_queue_and_merges_by_max() -> None:
    a, b = Metrics(), Metrics()
    JobMetrics(a).depth({"high": 3, "batch": 10})
    JobMetrics(a).depth({"high": 4})  # the batch drained: 0, not its last value
    JobMetrics(b).depth({"high": 4, "low": 1})
    board = MetricsBoard(clock=lambda: 0.0)
    board.report("replica-a", a.snapshot())
    board.report("replica-b", b.snapshot())
    text = render(board.total()).decode()
    assert 'noa_queue_depth{queue="high"} 4.0' in text  # the same database read twice
    assert 'noa_queue_depth{queue="batch"} 0.0' in text
    assert 'noa_queue_depth{queue="low"} 1.0' in text
    assert 'noa_queue_depth{queue="medium"} 0.0' in text


def test_webhook_outcomes() -> None:
    metrics = Metrics()
    recorder = JobMetrics(metrics)
    recorder.webhook("job", "delivered")
    recorder.webhook("job", "retried")
    recorder.webhook("job", "retried")
    recorder.webhook("batch", "failed")
    text = render(metrics.snapshot()).decode()
    assert 'noa_webhook_deliveries_total{kind="job",outcome="retried"} 2.0' in text
    assert 'noa_webhook_deliveries_total{kind="batch",outcome="failed"} 1.0' in text
    with pytest.raises(ValueError):
        recorder.webhook("job", "lost")
