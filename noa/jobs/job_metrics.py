"""The job system's Prometheus series, recorded into a replica's ``Metrics``.

- ``noa_jobs_total{queue,outcome}``: finished jobs; ``outcome`` is the final status
  (``completed``, ``failed``, ``dead``, ``cancelled``).
- ``noa_job_latency_seconds{queue,phase}``: ``queued`` (from when the job was due to its first
  start), ``run`` (first start to finish, retries and their backoff included) and ``total``
  (submitted to finished). A job cancelled before it ran has only ``total``.
- ``noa_queue_depth{queue}``: queued jobs now, as the store counts them (every replica that
  reports it reads the same database, so replicas' values merge by ``max``, not by sum).
- ``noa_webhook_deliveries_total{kind,outcome}``: webhook attempts by subject kind (``job``,
  ``batch``) and outcome (``delivered``, ``retried``, ``failed``).

The ``queue`` label is the job's priority (``high``, ``medium``, ``low``), or ``batch`` for the
jobs of a batch (those with a ``parent_id``): a batch's thousands of lines would otherwise hide
the interactive queues' depth and latency. Label values are these four and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping

from noa.jobs.model import Job, Priority
from noa.observability.metrics import Metrics

BATCH_QUEUE = "batch"
QUEUES: tuple[str, ...] = (*(p.label for p in Priority), BATCH_QUEUE)
PHASES = ("queued", "run", "total")
WEBHOOK_OUTCOMES = ("delivered", "retried", "failed")


def queue_label(priority: Priority | int, batch: bool) -> str:
    """The ``queue`` label of a job of this priority, or of a batch's job."""
    return BATCH_QUEUE if batch else Priority(priority).label


def queue_of(job: Job) -> str:
    """The ``queue`` label of ``job``: ``batch`` when it has a ``parent_id``, else its
    priority."""
    return queue_label(job.priority, job.parent_id is not None)


def latencies(job: Job) -> dict[str, float]:
    """The phases of a finished job that it went through, in seconds (never negative).

    ``queued`` counts from ``run_at``, or from ``created_at`` when a retry moved ``run_at``
    past the first start (the original due time is not kept)."""
    out: dict[str, float] = {}
    if job.finished_at is not None:
        out["total"] = max(0.0, job.finished_at - job.created_at)
    if job.started_at is not None:
        due = job.run_at if job.run_at <= job.started_at else job.created_at
        out["queued"] = max(0.0, job.started_at - due)
        if job.finished_at is not None:
            out["run"] = max(0.0, job.finished_at - job.started_at)
    return out


class JobMetrics:
    """Records the job series into ``metrics`` (a ``Metrics`` built with the default specs,
    which declare them)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def finished(self, job: Job) -> None:
        """A job that reached its final status: counted by outcome, its latencies observed."""
        queue = queue_of(job)
        self.metrics["noa_jobs_total"].inc((queue, job.status.value))
        histogram = self.metrics["noa_job_latency_seconds"]
        for phase, seconds in latencies(job).items():
            histogram.observe((queue, phase), seconds)

    def depth(self, counts: Mapping[str, int]) -> None:
        """The queued jobs per queue (``JobStore.queue_depths()``); a known queue missing from
        ``counts`` is set to 0, so a drained queue reads 0 rather than its last value."""
        gauge = self.metrics["noa_queue_depth"]
        for queue in (*QUEUES, *(q for q in counts if q not in QUEUES)):
            gauge.set((queue,), float(counts.get(queue, 0)))

    def webhook(self, kind: str, outcome: str) -> None:
        """One delivery attempt's outcome: ``delivered``, ``retried`` or ``failed``."""
        if outcome not in WEBHOOK_OUTCOMES:
            raise ValueError(f"a webhook outcome is one of {', '.join(WEBHOOK_OUTCOMES)}")
        self.metrics["noa_webhook_deliveries_total"].inc((kind, outcome))
