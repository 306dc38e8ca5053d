"""The CollectJob status as one typed value: phases, conditions and mirrored progress.

Only the operator writes status, and it always writes the whole value it computed, so the
models here are the only place that knows the camelCase names (their aliases). A phase or
condition type this build does not know (written by a newer operator) reads as absent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PlainSerializer, TypeAdapter
from pydantic.dataclasses import dataclass

from collectjob_api.models import CAMEL_CASE, Pruned, parse, under
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


def _known(kind: type[StrEnum]) -> Callable[[Any], Any]:
    """A value that is not one of `kind` reads as absent (written by a newer operator)."""
    return lambda value: value if isinstance(value, str) and value in set(kind) else None


def _condition_status(value: Any) -> bool:
    return value is True or value == "True"


Time = Annotated[
    datetime | None,
    BeforeValidator(lambda v: parse_time(v) if isinstance(v, str) else v),
    PlainSerializer(format_time),
]
"""RFC 3339 in the object, a datetime in Python (collectjob_api.rfc3339)."""


@dataclass(frozen=True, config=CAMEL_CASE)
class Condition(Pruned):
    type: ConditionType
    status: Annotated[
        bool,
        BeforeValidator(_condition_status),
        PlainSerializer(lambda status: "True" if status else "False"),
    ]
    reason: str = ""
    message: str = ""
    last_transition_time: Time = None
    observed_generation: int = 0

    def to_dict(self) -> dict[str, Any]:
        return _dump(self)


@dataclass(frozen=True, config=CAMEL_CASE)
class WorkerPodCount(Pruned):
    """The worker pod whose restartCount was last added to `workerRestarts`."""

    name: str = ""
    restarts: int = 0


def _known_conditions(value: Any) -> Any:
    known = set(ConditionType)
    return [c for c in value or () if not isinstance(c, Mapping) or c.get("type") in known]


@dataclass(frozen=True, config=CAMEL_CASE)
class JobStatus(Pruned):
    phase: Annotated[Phase | None, BeforeValidator(_known(Phase))] = None
    observed_generation: int = 0
    conditions: Annotated[tuple[Condition, ...], BeforeValidator(_known_conditions)] = ()
    rows_processed: int = 0
    rows_rejected: int = 0
    bytes_processed: int = 0
    bytes_total: int = 0
    progress: str = ""
    start_time: Time = None
    completion_time: Time = None
    last_checkpoint_time: Time = None
    estimated_completion_time: Time = None
    suspended_since: Time = None
    suspended_seconds: int = 0
    worker_restarts: int = 0
    worker_pod: WorkerPodCount = WorkerPodCount()
    checkpoint_configmap: Annotated[str, Field(alias="checkpointConfigMap")] = ""
    message: str = ""
    throttle_bytes_per_second: int = 0
    """The spec's throttle the worker runs under, so `status` tells why a job is slow."""

    def condition(self, kind: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    def evolve(self, **changes: Any) -> JobStatus:
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> JobStatus:
        return parse(cls, raw or {}, ValueError, under("status"))

    def to_dict(self) -> dict[str, Any]:
        """The full status as a merge patch: absent values are sent as null to clear them."""
        return _dump(self)

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


def _dump(value: Condition | JobStatus) -> dict[str, Any]:
    """The object's form: camelCase, RFC 3339 times, every field (None clears it)."""
    dumped: dict[str, Any] = _ADAPTERS[type(value)].dump_python(value, mode="json", by_alias=True)
    return dumped


_ADAPTERS: dict[type, TypeAdapter[Any]] = {m: TypeAdapter(m) for m in (Condition, JobStatus)}
