"""Pod status as a kubelet reports it, built from what the local node knows of its processes.

Everything here is pure, so the rules a kubelet follows (which phase, which condition, which
container state) are unit-tested without a cluster. The agent sends the result as a strategic
merge patch of `pods/status`: containerStatuses merge by name and conditions by type, so each
container state lists all three kinds with the unused ones null (a container that goes from
running to terminated must lose its `running` key), and conditions null a stale reason.

Readiness, liveness and startup probes are not run: a running container is started and ready.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from collectjob_api.rfc3339 import format_time, parse_time

Json = Mapping[str, Any]

# What a kubelet reports for a container it can no longer find (here: the agent restarted).
LOST_EXIT_CODE = 137


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Running:
    started_at: datetime


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    finished_at: datetime
    started_at: datetime | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "finishedAt": format_time(self.finished_at),
            "startedAt": format_time(self.started_at) if self.started_at else None,
        }
        if self.message:
            body["message"] = self.message
        return body

    @classmethod
    def parse(cls, raw: Json) -> Terminated:
        return cls(
            exit_code=int(raw.get("exitCode", 0)),
            reason=raw.get("reason") or "",
            finished_at=parse_time(raw.get("finishedAt")) or datetime.now(UTC),
            started_at=parse_time(raw.get("startedAt")),
            message=raw.get("message") or "",
        )


ContainerState = Waiting | Running | Terminated


def exited(
    exit_code: int, started_at: datetime | None, finished_at: datetime, oom_killed: bool = False
) -> Terminated:
    """A container's exit, named as a kubelet names it."""
    reason = "OOMKilled" if oom_killed else "Completed" if exit_code == 0 else "Error"
    return Terminated(exit_code, reason, finished_at, started_at)


def state_json(state: ContainerState) -> dict[str, Any]:
    waiting = running = terminated = None
    if isinstance(state, Waiting):
        waiting = {"reason": state.reason, "message": state.message or None}
    elif isinstance(state, Running):
        running = {"startedAt": format_time(state.started_at)}
    else:
        terminated = state.to_json()
    return {"waiting": waiting, "running": running, "terminated": terminated}


@dataclass(frozen=True)
class ContainerStatus:
    name: str
    image: str
    state: ContainerState
    last_terminated: Terminated | None = None
    restart_count: int = 0
    container_id: str = ""
    image_id: str = ""

    @property
    def ready(self) -> bool:
        return isinstance(self.state, Running)

    @property
    def last_exit(self) -> Terminated | None:
        """The most recent exit: the current state if terminated, else the last one."""
        return self.state if isinstance(self.state, Terminated) else self.last_terminated

    @property
    def succeeded(self) -> bool:
        return isinstance(self.state, Terminated) and self.state.exit_code == 0

    @classmethod
    def parse(cls, raw: Json) -> ContainerStatus:
        state_raw = raw.get("state") or {}
        state: ContainerState
        if state_raw.get("running"):
            state = Running(parse_time(state_raw["running"].get("startedAt")) or datetime.now(UTC))
        elif state_raw.get("terminated"):
            state = Terminated.parse(state_raw["terminated"])
        else:
            waiting = state_raw.get("waiting") or {}
            state = Waiting(
                waiting.get("reason") or "ContainerCreating", waiting.get("message") or ""
            )
        last = (raw.get("lastState") or {}).get("terminated")
        return cls(
            name=raw["name"],
            image=raw.get("image", ""),
            state=state,
            last_terminated=Terminated.parse(last) if last else None,
            restart_count=int(raw.get("restartCount", 0)),
            container_id=raw.get("containerID") or "",
            image_id=raw.get("imageID") or "",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "containerID": self.container_id or None,
            "ready": self.ready,
            "started": isinstance(self.state, Running),
            "restartCount": self.restart_count,
            "state": state_json(self.state),
            "lastState": {
                "terminated": self.last_terminated.to_json() if self.last_terminated else None
            },
        }


def resumed(
    status: ContainerStatus, restart_policy: str, init_container: bool, now: datetime
) -> ContainerStatus:
    """A container status left by a previous agent, as this agent takes the pod over.

    A container it reported running has lost its process (as after a reboot): it is reported
    terminated, and restarted at once if the restart policy says so.
    """
    if isinstance(status.state, Running):
        status = replace(
            status,
            state=Terminated(
                LOST_EXIT_CODE,
                "ContainerStatusUnknown",
                now,
                status.state.started_at,
                "the local node agent restarted and stopped this process",
            ),
        )
    state = status.state
    if isinstance(state, Terminated) and should_restart(
        restart_policy, state.exit_code, init_container
    ):
        waiting = Waiting("CrashLoopBackOff", "restarting after the local node agent restarted")
        return replace(status, state=waiting, last_terminated=state)
    return status


def should_restart(restart_policy: str, exit_code: int, init_container: bool) -> bool:
    """Whether a kubelet restarts a container that exited with `exit_code`."""
    if restart_policy == "Never":
        return False
    if restart_policy == "OnFailure" or init_container:
        return exit_code != 0
    return True


def pod_phase(
    restart_policy: str,
    init: Sequence[ContainerStatus],
    app: Sequence[ContainerStatus],
    stopping: bool = False,
) -> str:
    """The phase a kubelet would report (its getPhase), `stopping` meaning no restart follows."""
    policy = "Never" if stopping else restart_policy
    for status in init:
        if status.succeeded:
            continue
        if policy == "Never" and status.last_exit is not None:
            return "Failed"
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for status in app:
        if isinstance(status.state, Running):
            running += 1
        elif status.last_exit is not None:
            stopped += 1
            succeeded += status.last_exit.exit_code == 0
        else:
            waiting += 1
    if waiting and not stopping:
        return "Pending"
    if running:
        return "Running"
    if stopping:
        return "Succeeded" if app and stopped == succeeded == len(app) else "Failed"
    if not stopped:
        return "Pending"
    if policy == "Always" or (policy == "OnFailure" and stopped != succeeded):
        return "Running"
    return "Succeeded" if stopped == succeeded else "Failed"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    since: datetime
    reason: str = ""
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": "True" if self.status else "False",
            "lastTransitionTime": format_time(self.since),
            "lastProbeTime": None,
            "reason": self.reason or None,
            "message": self.message or None,
        }


def pod_conditions(
    init: Sequence[ContainerStatus],
    app: Sequence[ContainerStatus],
    phase: str,
    sandbox_ready: bool,
    previous: Mapping[str, tuple[str, datetime | None]],
    now: datetime,
) -> tuple[Condition, ...]:
    """The conditions a kubelet owns; PodScheduled belongs to the scheduler and is left alone."""
    incomplete = _names(s for s in init if not s.succeeded)
    unready = _names(s for s in app if not s.ready)
    if phase in ("Succeeded", "Failed"):
        not_ready = ("PodCompleted", "")
    else:
        not_ready = ("ContainersNotReady", f"containers with unready status: [{unready}]")
    init_missing = (
        "ContainersNotInitialized",
        f"containers with incomplete status: [{incomplete}]",
    )
    wanted = [
        ("PodReadyToStartContainers", sandbox_ready, ("", "")),
        ("Initialized", not incomplete, init_missing if incomplete else ("", "")),
        ("ContainersReady", not unready, not_ready if unready else ("", "")),
        ("Ready", not unready, not_ready if unready else ("", "")),
    ]
    return tuple(
        Condition(kind, status, _since(previous.get(kind), status, now), reason, message)
        for kind, status, (reason, message) in wanted
    )


def _since(previous: tuple[str, datetime | None] | None, status: bool, now: datetime) -> datetime:
    """Keep a condition's lastTransitionTime while its status stays the same."""
    if previous is None or previous[1] is None:
        return now
    return previous[1] if previous[0] == ("True" if status else "False") else now


def _names(statuses: Iterable[ContainerStatus]) -> str:
    return " ".join(s.name for s in statuses)


@dataclass(frozen=True)
class PodReport:
    """Everything the node reports about one pod at one moment."""

    phase: str
    host_ip: str
    pod_ip: str | None
    start_time: datetime
    conditions: tuple[Condition, ...]
    init: tuple[ContainerStatus, ...]
    app: tuple[ContainerStatus, ...]

    def status_patch(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "phase": self.phase,
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "startTime": format_time(self.start_time),
            "conditions": [c.to_json() for c in self.conditions],
            "containerStatuses": [s.to_json() for s in self.app],
        }
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        if self.init:
            status["initContainerStatuses"] = [s.to_json() for s in self.init]
        return {"status": status}
