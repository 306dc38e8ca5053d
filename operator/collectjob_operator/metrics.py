"""The operator's Prometheus metrics.

Per-job values come from each job's status as last written, not from the worker, so a
dashboard still shows a job while its worker is scaled to zero. Labels are bounded: one
series per job (namespace, collectjob) and per phase, never per row or chunk.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from collectjob_operator.job import JobRef
from collectjob_operator.status import JobStatus, Phase

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)

PHASE_TRANSITIONS = Counter(
    "collectjob_phase_transitions_total",
    "CollectJob phase changes the operator made, by the phase entered.",
    ["phase"],
)
RECONCILE_DURATION = Histogram(
    "collectjob_reconcile_duration_seconds",
    "Time one reconcile of one CollectJob took.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RECONCILE_ERRORS = Counter(
    "collectjob_reconcile_errors_total",
    "Reconciles that failed and were retried.",
)
EVENTS_DROPPED = Counter(
    "collectjob_events_dropped_total",
    "Kubernetes Events about CollectJobs not posted: the queue was full or the API refused.",
)
SUSPEND_LATENCY = Histogram(
    "collectjob_suspend_latency_seconds",
    "From a suspend seen in the spec to the worker gone and its checkpoint committed.",
    buckets=LATENCY_BUCKETS,
)
RESUME_LATENCY = Histogram(
    "collectjob_resume_latency_seconds",
    "From a resume seen in the spec to a worker pod running again.",
    buckets=LATENCY_BUCKETS,
)


class JobsCollector(Collector):
    """Reads the operator's last written status of every job at scrape time."""

    def __init__(self) -> None:
        self._jobs: dict[JobRef, JobStatus] = {}
        self._lock = threading.Lock()

    def record(self, ref: JobRef, status: JobStatus) -> None:
        with self._lock:
            self._jobs[ref] = status

    def forget(self, ref: JobRef) -> None:
        with self._lock:
            self._jobs.pop(ref, None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            jobs = dict(self._jobs)
        by_phase = GaugeMetricFamily("collectjob_jobs", "CollectJobs by phase.", labels=["phase"])
        counts = dict.fromkeys(Phase, 0)
        for status in jobs.values():
            if status.phase is not None:
                counts[status.phase] += 1
        for phase, count in counts.items():
            by_phase.add_metric([str(phase)], count)
        yield by_phase
        yield from _per_job(jobs)


def _per_job(jobs: dict[JobRef, JobStatus]) -> Iterator[Metric]:
    labels = ["namespace", "collectjob"]
    families = {
        "progress": GaugeMetricFamily(
            "collectjob_job_progress_ratio", "Share of the source processed (0-1).", labels=labels
        ),
        "rows": GaugeMetricFamily(
            "collectjob_job_rows_processed", "Rows processed, from status.", labels=labels
        ),
        "rejected": GaugeMetricFamily(
            "collectjob_job_rows_rejected", "Rows rejected, from status.", labels=labels
        ),
        "suspended": GaugeMetricFamily(
            "collectjob_job_suspended", "1 while the job is suspended or suspending.", labels=labels
        ),
        "restarts": GaugeMetricFamily(
            "collectjob_job_worker_restarts", "Worker restarts counted so far.", labels=labels
        ),
        "checkpoint": GaugeMetricFamily(
            "collectjob_job_last_checkpoint_timestamp_seconds",
            "When the worker last committed a checkpoint (Unix time).",
            labels=labels,
        ),
        "phase": GaugeMetricFamily(
            "collectjob_job_phase",
            "1 for the job's current phase; one series per job.",
            labels=[*labels, "phase"],
        ),
        "eta": GaugeMetricFamily(
            "collectjob_job_estimated_completion_timestamp_seconds",
            "Estimated completion time from recent throughput (Unix time).",
            labels=labels,
        ),
    }
    for ref, status in jobs.items():
        key = [ref.namespace, ref.name]
        ratio = status.bytes_processed / status.bytes_total if status.bytes_total else 0.0
        if status.phase is Phase.SUCCEEDED:
            ratio = 1.0
        families["progress"].add_metric(key, min(1.0, ratio))
        families["rows"].add_metric(key, status.rows_processed)
        families["rejected"].add_metric(key, status.rows_rejected)
        suspended = status.phase in (Phase.SUSPENDING, Phase.SUSPENDED)
        families["suspended"].add_metric(key, 1.0 if suspended else 0.0)
        families["restarts"].add_metric(key, status.worker_restarts)
        if status.phase is not None:
            families["phase"].add_metric([*key, str(status.phase)], 1.0)
        if status.last_checkpoint_time is not None:
            families["checkpoint"].add_metric(key, status.last_checkpoint_time.timestamp())
        if status.estimated_completion_time is not None:
            families["eta"].add_metric(key, status.estimated_completion_time.timestamp())
    yield from families.values()


def register_jobs_collector(registry: CollectorRegistry = REGISTRY) -> JobsCollector:
    collector = JobsCollector()
    registry.register(collector)
    return collector
