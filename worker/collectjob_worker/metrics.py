"""The worker's Prometheus metrics, served on /metrics.

Labels are only `namespace` and `collectjob`: one series per job, never per row or chunk.
Counters count what this process committed (Prometheus handles the reset when a worker
restarts); the gauges carry the job's overall position from the checkpoint.
"""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from collectjob_api.checkpoint import Checkpoint

LABELS = ("namespace", "collectjob")
MetricT = TypeVar("MetricT", Counter, Gauge, Histogram)
CHUNK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
CHECKPOINT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class WorkerMetrics:
    def __init__(self, namespace: str, job: str) -> None:
        self.registry = CollectorRegistry()

        def labelled(kind: type[MetricT], name: str, doc: str, **options: Any) -> MetricT:
            metric = kind(
                f"collectjob_worker_{name}", doc, LABELS, registry=self.registry, **options
            )
            return metric.labels(namespace, job)

        self.rows = labelled(Counter, "rows_processed", "Rows written to the sink.")
        self.rejected = labelled(Counter, "rows_rejected", "Rows written to rejects.")
        self.bytes = labelled(Counter, "bytes_processed", "Source bytes committed.")
        self.conflicts = labelled(
            Counter,
            "checkpoint_conflicts",
            "Checkpoint writes refused because another worker updated it (fencing).",
        )
        self.progress = labelled(Gauge, "progress_ratio", "Fraction of the source committed, 0-1.")
        self.last_checkpoint = labelled(
            Gauge,
            "last_checkpoint_timestamp_seconds",
            "Unix time of the last committed checkpoint.",
        )
        self.chunk_seconds = labelled(
            Histogram,
            "chunk_duration_seconds",
            "Time to read, transform and write one chunk.",
            buckets=CHUNK_BUCKETS,
        )
        self.checkpoint_seconds = labelled(
            Histogram,
            "checkpoint_write_duration_seconds",
            "Time to commit one checkpoint.",
            buckets=CHECKPOINT_BUCKETS,
        )

        processor_labels = (*LABELS, "processor")
        self._processor_seconds = Histogram(
            "collectjob_worker_processor_duration_seconds",
            "Time the job's processor took per block of rows.",
            processor_labels,
            registry=self.registry,
            buckets=CHUNK_BUCKETS,
        )
        self._processor_rows_in = Counter(
            "collectjob_worker_processor_rows_in",
            "Rows given to the job's processor.",
            processor_labels,
            registry=self.registry,
        )
        self._processor_rows_out = Counter(
            "collectjob_worker_processor_rows_out",
            "Rows the job's processor returned (the rest it rejected).",
            processor_labels,
            registry=self.registry,
        )
        self._labels = (namespace, job)

    def processed(self, processor: str, seconds: float, rows_in: int, rows_out: int) -> None:
        """One processor call; the processor label is the job's one `spec.process.name`."""
        labels = (*self._labels, processor)
        self._processor_seconds.labels(*labels).observe(seconds)
        self._processor_rows_in.labels(*labels).inc(rows_in)
        self._processor_rows_out.labels(*labels).inc(rows_out)

    def position(self, checkpoint: Checkpoint) -> None:
        self.progress.set(checkpoint.progress_ratio)

    def committed(self, before: Checkpoint, after: Checkpoint, seconds: float, now: float) -> None:
        self.rows.inc(after.rows_processed - before.rows_processed)
        self.rejected.inc(after.rows_rejected - before.rows_rejected)
        self.bytes.inc(max(0, after.offset - before.offset))
        self.checkpoint_seconds.observe(seconds)
        self.last_checkpoint.set(now)
        self.position(after)

    def serve(self, port: int, address: str) -> None:
        start_http_server(port, addr=address, registry=self.registry)
