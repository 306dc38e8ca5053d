"""The CollectJob spec as one typed value, parsed once from the object's body.

The API server has already applied the CRD's defaults and validations, so the parser
only maps camelCase to fields; the defaults here matter for bodies built by hand
(tests, or objects written before a default existed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from collectjob_api.contract import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_GRACE_SECONDS,
    DEFAULT_METRICS_PORT,
    SinkConfig,
    SourceConfig,
    WorkerConfig,
)

DEFAULT_BACKOFF_LIMIT = 3


class Shutdown(StrEnum):
    NONE = ""
    STOP = "Stop"
    TERMINATE = "Terminate"


@dataclass(frozen=True)
class WorkerSpec:
    """How the worker pod runs. Kubernetes sub-objects pass through as the user wrote them."""

    image: str = ""
    metrics_port: int = DEFAULT_METRICS_PORT
    termination_grace_period_seconds: int = DEFAULT_GRACE_SECONDS
    resources: Mapping[str, Any] = field(default_factory=dict)
    env: tuple[Mapping[str, Any], ...] = ()
    volumes: tuple[Mapping[str, Any], ...] = ()
    volume_mounts: tuple[Mapping[str, Any], ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> WorkerSpec:
        return cls(
            image=str(raw.get("image", "")),
            metrics_port=int(raw.get("metricsPort", DEFAULT_METRICS_PORT)),
            termination_grace_period_seconds=int(
                raw.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
            ),
            resources=dict(raw.get("resources") or {}),
            env=tuple(raw.get("env") or ()),
            volumes=tuple(raw.get("volumes") or ()),
            volume_mounts=tuple(raw.get("volumeMounts") or ()),
            node_selector=dict(raw.get("nodeSelector") or {}),
            tolerations=tuple(raw.get("tolerations") or ()),
        )


@dataclass(frozen=True)
class CollectJobSpec:
    source: SourceConfig
    sink: SinkConfig
    transform: Mapping[str, Any] | None = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    suspend: bool = False
    shutdown: Shutdown = Shutdown.NONE
    backoff_limit: int = DEFAULT_BACKOFF_LIMIT
    active_deadline_seconds: int | None = None
    worker: WorkerSpec = field(default_factory=WorkerSpec)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CollectJobSpec:
        """Parse `.spec`; a missing source or sink url means the body is not a CollectJob."""
        source = raw.get("source") or {}
        sink = raw.get("sink") or {}
        if not source.get("url") or not sink.get("url"):
            raise ValueError("spec.source.url and spec.sink.url are required")
        deadline = raw.get("activeDeadlineSeconds")
        return cls(
            source=SourceConfig(
                url=source["url"],
                format=source.get("format", "csv"),
                delimiter=source.get("delimiter", ","),
                quote=source.get("quote", '"'),
                encoding=source.get("encoding", "utf-8"),
                header=bool(source.get("header", True)),
            ),
            sink=SinkConfig(url=sink["url"], format=sink.get("format", "csv")),
            transform=raw.get("transform"),
            chunk_bytes=int(raw.get("chunkBytes", DEFAULT_CHUNK_BYTES)),
            suspend=bool(raw.get("suspend", False)),
            shutdown=Shutdown(raw.get("shutdown") or ""),
            backoff_limit=int(raw.get("backoffLimit", DEFAULT_BACKOFF_LIMIT)),
            active_deadline_seconds=int(deadline) if deadline is not None else None,
            worker=WorkerSpec.from_dict(raw.get("worker") or {}),
        )

    def worker_config(self) -> WorkerConfig:
        """What the worker is told through its environment."""
        return WorkerConfig(
            source=self.source,
            sink=self.sink,
            transform=dict(self.transform) if self.transform is not None else None,
            chunk_bytes=self.chunk_bytes,
            metrics_port=self.worker.metrics_port,
        )
