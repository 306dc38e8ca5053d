"""What a CollectJob should look like now: a pure function of its spec and the observed world.

Everything the operator does follows from `decide`: the worker's replica count, whether
pods must be killed at once, the status to write and the events to post. Because it
looks only at the current state (not at which event woke it), the same call converges
after an operator restart, a Deployment edited by hand or a missed event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from collectjob_api.checkpoint import Checkpoint
from collectjob_api.redact import safe_message
from collectjob_api.rfc3339 import parse_time
from collectjob_api.spec import CollectJobSpec, Shutdown
from collectjob_operator.status import (
    Condition,
    ConditionType,
    JobStatus,
    Phase,
    WorkerPodCount,
)

ACTIVE = frozenset({Phase.PENDING, Phase.RUNNING})
WAS_SUSPENDED = frozenset({Phase.SUSPENDING, Phase.SUSPENDED})


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class PodView:
    """The facts about one worker pod that matter for decisions."""

    name: str
    running: bool
    terminating: bool
    restarts: int


@dataclass(frozen=True)
class World:
    """What the operator observed for one job, at one instant."""

    now: datetime
    pods: tuple[PodView, ...] = ()
    checkpoint: Checkpoint | None = None
    checkpoint_problem: str = ""
    """Why the stored checkpoint could not be read, if it could not."""
    checkpoint_configmap: str = ""
    eta: datetime | None = None
    """Completion estimate from recent throughput, computed by the caller."""
    deployment_scaled_down: bool = False
    """The worker Deployment asks for zero replicas, its controller has seen that spec
    (observedGeneration), and it or its ReplicaSets report no replicas (scale.py). Without
    it an empty pod list may only mean the ReplicaSet has not created the pod yet."""
    name_taken: str = ""
    """Which objects hold a child's name without having been created by this job. They
    are never adopted: the job fails with reason NameTaken instead."""


@dataclass(frozen=True)
class JobEvent:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    replicas: int
    kill_pods: bool
    """Delete the worker pods with grace period 0 (Terminate)."""
    status: JobStatus
    events: tuple[JobEvent, ...]
    requeue_after: float | None
    """Look again after this many seconds even if nothing changes (deadline)."""


@dataclass(frozen=True)
class _Verdict:
    phase: Phase
    reason: str
    message: str


def decide(spec: CollectJobSpec, generation: int, current: JobStatus, world: World) -> Decision:
    status = _mirror_checkpoint(current, world)
    finished = (current.phase is not None and current.phase.final) or (
        world.checkpoint is not None and world.checkpoint.done
    )
    if not finished:
        # A worker that exits after its last row is restarted by its Deployment until the
        # scale-down lands: those restarts are not failures worth a warning.
        status = _count_restarts(status, world.pods)
    verdict = _verdict(spec, current, status, world)
    status = _account_time(status, verdict.phase, world.now)
    status = status.evolve(
        phase=verdict.phase,
        observed_generation=generation,
        message=verdict.message,
        throttle_bytes_per_second=spec.throttle.bytes_per_second or 0,
        conditions=_conditions(current, verdict, generation, world.now),
        estimated_completion_time=world.eta if verdict.phase is Phase.RUNNING else None,
        completion_time=(
            status.completion_time or world.now
            if verdict.phase is Phase.SUCCEEDED
            else status.completion_time
        ),
    )
    pods_left = bool(world.pods)
    return Decision(
        replicas=1 if verdict.phase in ACTIVE else 0,
        kill_pods=verdict.phase is Phase.TERMINATED and pods_left,
        status=status,
        events=_events(current, status, verdict),
        requeue_after=_deadline_requeue(spec, status, world.now),
    )


def _mirror_checkpoint(current: JobStatus, world: World) -> JobStatus:
    status = current.evolve(checkpoint_configmap=world.checkpoint_configmap)
    cp = world.checkpoint
    if cp is None:
        return status if status.progress else status.evolve(progress="0.0%")
    return status.evolve(
        rows_processed=cp.rows_processed,
        rows_rejected=cp.rows_rejected,
        bytes_processed=cp.bytes_total if cp.done else cp.offset,
        bytes_total=cp.bytes_total,
        progress=f"{cp.progress_ratio * 100:.1f}%",
        last_checkpoint_time=parse_time(cp.updated_at) or current.last_checkpoint_time,
    )


def _count_restarts(status: JobStatus, pods: tuple[PodView, ...]) -> JobStatus:
    """Add restarts of the live worker pod not counted yet; a new pod starts from zero."""
    live = [p for p in pods if not p.terminating]
    if not live:
        return status
    pod = max(live, key=lambda p: p.restarts)
    seen = status.worker_pod.restarts if status.worker_pod.name == pod.name else 0
    return status.evolve(
        worker_restarts=status.worker_restarts + max(0, pod.restarts - seen),
        worker_pod=WorkerPodCount(name=pod.name, restarts=pod.restarts),
    )


def _verdict(spec: CollectJobSpec, current: JobStatus, status: JobStatus, world: World) -> _Verdict:
    """The phase the job is in now, in the order the API promises: final phases stay, a
    child's name held by a foreign object fails the job, a committed done checkpoint wins
    (every row really was processed), then shutdown, then the worker's error, then the
    limits, then suspend."""
    previous = current.phase
    worker_gone = world.deployment_scaled_down and not world.pods
    cp = world.checkpoint
    rows = status.rows_processed
    if previous is not None and previous.final:
        return _Verdict(previous, _reason_of(current, previous), current.message)
    if world.name_taken:
        return _Verdict(Phase.FAILED, "NameTaken", world.name_taken)
    if cp is not None and cp.done:
        return _Verdict(
            Phase.SUCCEEDED,
            "Completed",
            f"Processed {rows} rows ({status.rows_rejected} rejected)",
        )
    if spec.shutdown is Shutdown.TERMINATE:
        return _Verdict(
            Phase.TERMINATED, "Terminated", "Terminated: worker pods were deleted without grace"
        )
    if spec.shutdown is Shutdown.STOP:
        if not worker_gone:
            return _Verdict(
                Phase.STOPPING,
                "Stopping",
                "Stop requested: waiting for the worker to commit its chunk and exit",
            )
        return _Verdict(
            Phase.STOPPED,
            "Stopped",
            f"Stopped after {rows} rows; the outputs are kept but not marked successful",
        )
    if cp is not None and cp.error:
        return _Verdict(Phase.FAILED, "WorkerError", safe_message(cp.error))
    if status.worker_restarts > spec.backoff_limit:
        return _Verdict(
            Phase.FAILED,
            "BackoffLimitExceeded",
            f"The worker failed {status.worker_restarts} times, more than backoffLimit "
            f"{spec.backoff_limit}; see the worker pod's log",
        )
    if _deadline_passed(spec, status, world.now):
        return _Verdict(
            Phase.FAILED,
            "DeadlineExceeded",
            f"The job was active longer than activeDeadlineSeconds "
            f"({spec.active_deadline_seconds}s, time suspended not counted)",
        )
    if spec.suspend:
        if not worker_gone:
            return _Verdict(
                Phase.SUSPENDING,
                "Suspending",
                "Suspend requested: waiting for the worker to commit its checkpoint and exit",
            )
        return _Verdict(
            Phase.SUSPENDED,
            "Suspended",
            f"Suspended after {rows} rows; set spec.suspend to false to resume",
        )
    return _active_verdict(current, status, world)


def _active_verdict(current: JobStatus, status: JobStatus, world: World) -> _Verdict:
    running = any(p.running and not p.terminating for p in world.pods)
    if running or current.phase in (Phase.RUNNING, *WAS_SUSPENDED):
        message = "The worker is processing the source"
        if world.checkpoint_problem:
            message = safe_message(f"The checkpoint cannot be read: {world.checkpoint_problem}")
        retrying = world.checkpoint.retrying if world.checkpoint else None
        if retrying is not None:
            message = safe_message(f"Retrying since {retrying.since}: {retrying.message}")
            return _Verdict(Phase.RUNNING, retrying.reason, message)
        return _Verdict(Phase.RUNNING, "Running", message)
    return _Verdict(Phase.PENDING, "Pending", "Waiting for the worker pod to run")


def _reason_of(current: JobStatus, phase: Phase) -> str:
    """Keep the reason a final phase was reached with (for example DeadlineExceeded)."""
    kind = ConditionType.FAILED if phase is Phase.FAILED else ConditionType.PROGRESSING
    cond = current.condition(kind)
    return cond.reason if cond is not None and cond.reason else str(phase)


def _active_seconds(status: JobStatus, now: datetime) -> float:
    if status.start_time is None:
        return 0.0
    suspended = float(status.suspended_seconds)
    if status.suspended_since is not None:
        suspended += (now - status.suspended_since).total_seconds()
    return (now - status.start_time).total_seconds() - suspended


def _deadline_passed(spec: CollectJobSpec, status: JobStatus, now: datetime) -> bool:
    limit = spec.active_deadline_seconds
    return limit is not None and _active_seconds(status, now) >= limit


def _deadline_requeue(spec: CollectJobSpec, status: JobStatus, now: datetime) -> float | None:
    limit = spec.active_deadline_seconds
    if limit is None or status.phase not in ACTIVE:
        return None
    return max(0.5, limit - _active_seconds(status, now))


def _account_time(status: JobStatus, phase: Phase, now: datetime) -> JobStatus:
    """Track when the job started and how long it has been suspended (for the deadline).

    Suspended time counts only after the start: a job created suspended starts its clock
    when it first becomes active, so subtracting that earlier wait would run it backwards.
    """
    if status.start_time is None:
        if phase in ACTIVE:
            return status.evolve(start_time=now, suspended_since=None)
        return status.evolve(suspended_since=None)
    if phase in WAS_SUSPENDED:
        return status if status.suspended_since else status.evolve(suspended_since=now)
    if status.suspended_since is not None:
        paused = int((now - status.suspended_since).total_seconds())
        return status.evolve(
            suspended_since=None, suspended_seconds=status.suspended_seconds + max(0, paused)
        )
    return status


def _conditions(
    current: JobStatus, verdict: _Verdict, generation: int, now: datetime
) -> tuple[Condition, ...]:
    phase = verdict.phase
    wanted = (
        (ConditionType.PROGRESSING, phase in ACTIVE, verdict.reason),
        (
            ConditionType.SUSPENDED,
            phase is Phase.SUSPENDED,
            verdict.reason if phase in WAS_SUSPENDED else "NotSuspended",
        ),
        (
            ConditionType.COMPLETE,
            phase is Phase.SUCCEEDED,
            verdict.reason if phase is Phase.SUCCEEDED else "NotComplete",
        ),
        (
            ConditionType.FAILED,
            phase is Phase.FAILED,
            verdict.reason if phase is Phase.FAILED else "NotFailed",
        ),
    )
    result = []
    for kind, state, reason in wanted:
        old = current.condition(kind)
        since = old.last_transition_time if old is not None and old.status == state else None
        result.append(
            Condition(
                type=kind,
                status=state,
                reason=reason,
                message=verdict.message if state else "",
                last_transition_time=since or now,
                observed_generation=generation,
            )
        )
    return tuple(result)


_PHASE_EVENTS = {
    Phase.SUSPENDING: (EventType.NORMAL, "Suspending"),
    Phase.SUSPENDED: (EventType.NORMAL, "Suspended"),
    Phase.STOPPING: (EventType.NORMAL, "Stopping"),
    Phase.STOPPED: (EventType.NORMAL, "Stopped"),
    Phase.TERMINATED: (EventType.NORMAL, "Terminated"),
    Phase.SUCCEEDED: (EventType.NORMAL, "Completed"),
    Phase.FAILED: (EventType.WARNING, "Failed"),
}


def _events(current: JobStatus, status: JobStatus, verdict: _Verdict) -> tuple[JobEvent, ...]:
    events = []
    if status.worker_restarts > current.worker_restarts:
        events.append(
            JobEvent(
                EventType.WARNING,
                "WorkerRestarted",
                f"The worker restarted ({status.worker_restarts} so far)",
            )
        )
    previous, phase = current.phase, verdict.phase
    if phase != previous:
        if phase in ACTIVE and previous in WAS_SUSPENDED:
            events.append(JobEvent(EventType.NORMAL, "Resumed", "Resumed from the checkpoint"))
        elif phase is Phase.RUNNING:
            events.append(JobEvent(EventType.NORMAL, "Started", "The worker is running"))
        elif phase in _PHASE_EVENTS:
            kind, reason = _PHASE_EVENTS[phase]
            events.append(JobEvent(kind, reason, verdict.message))
    return tuple(events)
