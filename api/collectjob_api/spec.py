"""The CollectJob spec as one typed value, parsed once from the object's body.

The API server has already applied the CRD's defaults and validations, so parsing mostly maps
camelCase to fields; the defaults here matter for bodies built by hand (tests, or objects
written before a default existed), and a test checks that they equal the CRD's. Unknown keys
are ignored, as the API server would prune them. A field is one line: its camelCase name
comes from the alias generator, its default is on that line.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field
from pydantic.dataclasses import dataclass

from collectjob_api.contract import (
    DEFAULT_BACKOFF_LIMIT,
    DEFAULT_CHUNK_BYTES,
    DEFAULT_GRACE_SECONDS,
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_METRICS_PORT,
    DEFAULT_RETRY_FOR_SECONDS,
    ProcessConfig,
    SinkConfig,
    SourceConfig,
    WorkerConfig,
)
from collectjob_api.models import CAMEL_CASE, Pruned, parse, under

__all__ = ["DEFAULT_BACKOFF_LIMIT", "CollectJobSpec", "Shutdown", "WorkerSpec"]


class Shutdown(StrEnum):
    NONE = ""
    STOP = "Stop"
    TERMINATE = "Terminate"


@dataclass(frozen=True, config=CAMEL_CASE)
class WorkerSpec(Pruned):
    """How the worker pod runs. Kubernetes sub-objects pass through as the user wrote them."""

    image: str = ""
    metrics_port: int = DEFAULT_METRICS_PORT
    termination_grace_period_seconds: int = DEFAULT_GRACE_SECONDS
    resources: dict[str, Any] | None = None
    """None when the CollectJob gives none (the operator's defaults apply); `{}` when it gives
    an empty one (nothing is set, so a LimitRange's defaults apply)."""
    env: tuple[dict[str, Any], ...] = ()
    env_from: tuple[dict[str, Any], ...] = ()
    volumes: tuple[dict[str, Any], ...] = ()
    volume_mounts: tuple[dict[str, Any], ...] = ()
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, config=CAMEL_CASE)
class ThrottleSpec(Pruned):
    """`spec.throttle`: the worker paces its reads to bytesPerSecond; None is unthrottled."""

    bytes_per_second: int | None = None


@dataclass(frozen=True, config=CAMEL_CASE)
class RetrySpec(Pruned):
    timeout_seconds: int = DEFAULT_RETRY_FOR_SECONDS


@dataclass(frozen=True, config=CAMEL_CASE)
class CollectJobSpec(Pruned):
    source: SourceConfig
    sink: SinkConfig
    transform: dict[str, Any] | None = None
    """Passed through to the worker, which validates it (collectjob_worker.transform)."""
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    suspend: bool = False
    shutdown: Shutdown = Shutdown.NONE
    backoff_limit: int = DEFAULT_BACKOFF_LIMIT
    active_deadline_seconds: int | None = None
    process: ProcessConfig | None = None
    worker: WorkerSpec = WorkerSpec()
    throttle: ThrottleSpec = ThrottleSpec()
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    retry: RetrySpec = RetrySpec()

    @classmethod
    def from_dict(cls, raw: Any) -> CollectJobSpec:
        """Parse `.spec`; errors name the field (`spec.source.url is required`)."""
        return parse(cls, raw, ValueError, under("spec"))

    def worker_config(self) -> WorkerConfig:
        """What the worker is told through its environment."""
        return WorkerConfig(
            source=self.source,
            sink=self.sink,
            transform=self.transform,
            chunk_bytes=self.chunk_bytes,
            metrics_port=self.worker.metrics_port,
            process=self.process,
            backoff_limit=self.backoff_limit,
            throttle_bytes_per_second=self.throttle.bytes_per_second or 0,
        )
