"""The CollectJob status as one typed value: phases, conditions and mirrored progress.

Only the operator writes status, and it always writes the whole value it computed, so
the parser and the serializer here are the only places that know the camelCase names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from collectjob_api.rfc3339 import format_time, parse_time


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDING = "Suspending"
    SUSPENDED = "Suspended"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    TERMINATED = "Terminated"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def final(self) -> bool:
        """A final phase never changes again, whatever the spec says later."""
        return self in _FINAL


_FINAL = frozenset({Phase.STOPPED, Phase.TERMINATED, Phase.SUCCEEDED, Phase.FAILED})


class ConditionType(StrEnum):
    PROGRESSING = "Progressing"
    SUSPENDED = "Suspended"
    COMPLETE = "Complete"
    FAILED = "Failed"


@dataclass(frozen=True)
class Condition:
    type: ConditionType
    status: bool
    reason: str
    message: str = ""
    last_transition_time: datetime | None = None
    observed_generation: int = 0

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Condition:
        return cls(
            type=ConditionType(raw["type"]),
            status=raw.get("status") == "True",
            reason=str(raw.get("reason", "")),
            message=str(raw.get("message", "")),
            last_transition_time=parse_time(raw.get("lastTransitionTime")),
            observed_generation=int(raw.get("observedGeneration", 0)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": str(self.type),
            "status": "True" if self.status else "False",
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": format_time(self.last_transition_time),
            "observedGeneration": self.observed_generation,
        }


@dataclass(frozen=True)
class WorkerPodCount:
    """The worker pod whose restartCount was last added to `workerRestarts`."""

    name: str = ""
    restarts: int = 0


@dataclass(frozen=True)
class JobStatus:
    phase: Phase | None = None
    observed_generation: int = 0
    conditions: tuple[Condition, ...] = ()
    rows_processed: int = 0
    rows_rejected: int = 0
    bytes_processed: int = 0
    bytes_total: int = 0
    progress: str = ""
    start_time: datetime | None = None
    completion_time: datetime | None = None
    last_checkpoint_time: datetime | None = None
    estimated_completion_time: datetime | None = None
    suspended_since: datetime | None = None
    suspended_seconds: int = 0
    worker_restarts: int = 0
    worker_pod: WorkerPodCount = field(default_factory=WorkerPodCount)
    checkpoint_configmap: str = ""
    message: str = ""

    def condition(self, kind: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    def evolve(self, **changes: Any) -> JobStatus:
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> JobStatus:
        raw = raw or {}
        pod = raw.get("workerPod") or {}
        phase = raw.get("phase")
        return cls(
            phase=Phase(phase) if isinstance(phase, str) and phase in set(Phase) else None,
            observed_generation=int(raw.get("observedGeneration", 0)),
            conditions=tuple(
                Condition.from_dict(c)
                for c in raw.get("conditions") or ()
                if c.get("type") in set(ConditionType)
            ),
            rows_processed=int(raw.get("rowsProcessed", 0)),
            rows_rejected=int(raw.get("rowsRejected", 0)),
            bytes_processed=int(raw.get("bytesProcessed", 0)),
            bytes_total=int(raw.get("bytesTotal", 0)),
            progress=str(raw.get("progress", "")),
            start_time=parse_time(raw.get("startTime")),
            completion_time=parse_time(raw.get("completionTime")),
            last_checkpoint_time=parse_time(raw.get("lastCheckpointTime")),
            estimated_completion_time=parse_time(raw.get("estimatedCompletionTime")),
            suspended_since=parse_time(raw.get("suspendedSince")),
            suspended_seconds=int(raw.get("suspendedSeconds", 0)),
            worker_restarts=int(raw.get("workerRestarts", 0)),
            worker_pod=WorkerPodCount(
                name=str(pod.get("name", "")), restarts=int(pod.get("restarts", 0))
            ),
            checkpoint_configmap=str(raw.get("checkpointConfigMap", "")),
            message=str(raw.get("message", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        """The full status as a merge patch: absent values are sent as null to clear them."""
        return {
            "phase": str(self.phase) if self.phase else None,
            "observedGeneration": self.observed_generation,
            "conditions": [c.to_dict() for c in self.conditions],
            "rowsProcessed": self.rows_processed,
            "rowsRejected": self.rows_rejected,
            "bytesProcessed": self.bytes_processed,
            "bytesTotal": self.bytes_total,
            "progress": self.progress,
            "startTime": format_time(self.start_time),
            "completionTime": format_time(self.completion_time),
            "lastCheckpointTime": format_time(self.last_checkpoint_time),
            "estimatedCompletionTime": format_time(self.estimated_completion_time),
            "suspendedSince": format_time(self.suspended_since),
            "suspendedSeconds": self.suspended_seconds,
            "workerRestarts": self.worker_restarts,
            "workerPod": {"name": self.worker_pod.name, "restarts": self.worker_pod.restarts},
            "checkpointConfigMap": self.checkpoint_configmap,
            "message": self.message,
        }

    def progress_only_change(self, other: JobStatus) -> bool:
        """True when `other` differs from this status only in mirrored progress.

        Such changes are coalesced to about one patch per second; anything else
        (phase, conditions, message) is written at once. Compared in serialized form,
        so sub-second differences that would never reach the API do not count.
        """
        mine, theirs = self.to_dict(), other.to_dict()
        for key in PROGRESS_KEYS:
            mine.pop(key)
            theirs.pop(key)
        return mine == theirs


PROGRESS_KEYS = frozenset(
    {
        "rowsProcessed",
        "rowsRejected",
        "bytesProcessed",
        "bytesTotal",
        "progress",
        "lastCheckpointTime",
        "estimatedCompletionTime",
    }
)
