"""One pod on the local node: its containers, their restarts, its status and its deletion.

A `PodWorker` is a thread that owns everything about one pod (one uid) from the moment the
pod is bound to the node until it is deleted. The pod watch hands it newer versions of the
pod (`update`), tells it when the pod is gone from the API (`kill`: force deletion) and when
the agent stops (`stop`). Every half second, or at once when woken, it reaps exited
processes, starts or restarts containers per restartPolicy with backoff, and patches the
pod's status when what it would report has changed.

Init containers run one after the other before the app containers, each to success (an init
container with restartPolicy Always, a sidecar, is run like any other init container).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes.client import ApiException
from urllib3.exceptions import HTTPError

from localcluster.nodeapi import NodeApi, describe
from localcluster.nodeobject import HOST_IP
from localcluster.podaddress import AddressPool
from localcluster.podcontainer import ContainerConfigError, ImageMissing, container_name
from localcluster.podenv import CommandError, EnvError, command_line, container_env
from localcluster.podprocess import (
    Backoff,
    RunningContainer,
    find_executable,
    start_process,
    without_init,
)
from localcluster.podsandbox import NodeContext, PodSandbox
from localcluster.podspec import Container, Pod
from localcluster.podstatus import (
    ContainerStatus,
    PodReport,
    Running,
    Terminated,
    Waiting,
    exited,
    pod_conditions,
    pod_phase,
    resumed,
    should_restart,
)
from localcluster.podvolumes import VolumeError, container_mounts

log = logging.getLogger(__name__)

TICK_SECONDS = 0.5
# Exit code and reason of a command that could not be executed, as containerd reports it.
START_ERROR = (128, "StartError")
TERMINAL = ("Succeeded", "Failed")
PULL = ("ErrImagePull", "ImagePullBackOff")


@dataclass
class Slot:
    """One container of the pod: its spec, what is reported about it, and its process."""

    spec: Container
    init: bool
    status: ContainerStatus
    process: RunningContainer | None = None
    next_start: float = 0.0
    backoff: Backoff = field(default_factory=Backoff)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _signal(slots: list[Slot], sig: signal.Signals) -> None:
    for slot in slots:
        if slot.process is not None:
            slot.process.signal(sig)


def _due(slot: Slot) -> bool:
    """A container not running, not finished for good, and past its backoff."""
    return not isinstance(slot.status.state, Terminated) and time.monotonic() >= slot.next_start


class PodWorker:
    """The thread that runs one pod (see the module docstring)."""

    def __init__(
        self, pod: Pod, context: NodeContext, api: NodeApi, addresses: AddressPool
    ) -> None:
        self.thread = threading.Thread(target=self._run, name=f"pod-{pod.uid[:8]}", daemon=True)
        self.context = context
        self.api = api
        self.sandbox = PodSandbox(pod, context, api, addresses, self._warn)
        self._latest = pod
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._killed = False
        self._agent_stopping = False
        self.slots = [self._slot(pod, c, True) for c in pod.init_containers] + [
            self._slot(pod, c, False) for c in pod.containers
        ]
        self.start_time = pod.start_time or utcnow()
        self.sandbox_ready = False
        self.setup_retry_at = 0.0
        self.setup_backoff = Backoff()
        self.error_backoff = Backoff()
        self.condition_times = dict(pod.condition_times)
        self.published: dict[str, Any] | None = None
        # Once a pod is Succeeded or Failed nothing runs again, and once that is reported (or
        # was, before this agent started) its status never changes again.
        self.final = pod.terminal
        self.reported_final = pod.terminal
        self._warned: set[str] = set()

    @staticmethod
    def _slot(pod: Pod, spec: Container, init: bool) -> Slot:
        known = {s.name: s for s in (pod.init_statuses if init else pod.statuses)}
        if spec.name in known and not pod.terminal:
            status = resumed(known[spec.name], pod.restart_policy, init, utcnow())
        elif spec.name in known:
            status = known[spec.name]
        else:
            reason = "PodInitializing" if pod.init_containers else "ContainerCreating"
            status = ContainerStatus(spec.name, spec.image, Waiting(reason))
        return Slot(spec, init, status)

    # Called from other threads.

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def update(self, pod: Pod) -> None:
        with self._lock:
            self._latest = pod
        self._wake.set()

    def kill(self) -> None:
        """The pod is gone from the API (force deletion): kill its processes at once."""
        self._killed = True
        self._wake.set()

    def stop(self) -> None:
        """The agent stops: end the processes within the shutdown grace, keep the pod."""
        self._agent_stopping = True
        self._wake.set()

    @property
    def pod(self) -> Pod:
        with self._lock:
            return self._latest

    # The worker's own thread.

    def _run(self) -> None:
        log.info("pod %s: taken over by the node", self.pod.key)
        try:
            while not self._cycle():
                if self._wake.wait(TICK_SECONDS):
                    self._wake.clear()
        finally:
            self.sandbox.release()

    def _cycle(self) -> bool:
        """One round of work; True once the worker is done with the pod."""
        pod = self.pod
        try:
            if self._killed:
                self._stop_processes(0)
                self.sandbox.remove()
                log.info("pod %s: deleted from the API, processes killed", pod.key)
                return True
            if self._agent_stopping:
                self._stop_processes(min(pod.grace_seconds, self.context.shutdown_grace))
                self._publish_last(pod)
                return True
            if pod.deletion_requested:
                return self._finish_deletion(pod)
            if not self.final:
                self._advance(pod)
            self._publish(pod)
        except (ApiException, HTTPError, OSError) as e:
            self._pause_after_error(f"pod {pod.key}: {describe(e)}")
        except Exception:
            log.exception("pod %s: unexpected error", pod.key)
            self._pause_after_error(f"pod {pod.key}: unexpected error")
        else:
            self.error_backoff.reset()
        return False

    def _pause_after_error(self, what: str) -> None:
        pause = self.error_backoff.delay(0)
        log.warning("%s; retrying in %gs", what, pause)
        self._wake.wait(pause)

    def _publish_last(self, pod: Pod) -> None:
        """The status as the agent stops: best effort, the API server may be stopping too."""
        try:
            self._publish(pod)
        except Exception as e:
            log.warning("pod %s: last status not reported: %s", pod.key, describe(e))

    def _finish_deletion(self, pod: Pod) -> bool:
        for slot in self.slots:
            if slot.process is not None:
                self._event(pod, "Normal", "Killing", f"Stopping container {slot.spec.name}")
        self._stop_processes(pod.grace_seconds)
        self._publish(pod, stopping=True)
        self.api.finish_deletion(pod)
        self.sandbox.remove()
        log.info("pod %s: deletion finished", pod.key)
        return True

    def _advance(self, pod: Pod) -> None:
        if not self._sandbox(pod):
            return
        self.sandbox.refresh_token(pod)
        for slot in self._runnable():
            if slot.process is not None:
                self._reap(slot, pod, restart=True)
            elif _due(slot):
                self._start(slot, pod)

    def _runnable(self) -> list[Slot]:
        """The first init container not yet done, or else every app container."""
        for slot in self.slots:
            if slot.init and not slot.status.succeeded:
                return [slot]
        return [slot for slot in self.slots if not slot.init]

    def _sandbox(self, pod: Pod) -> bool:
        """Whether the pod's sandbox is ready; sets it up, retried with backoff, if not."""
        if self.sandbox_ready:
            return True
        if time.monotonic() < self.setup_retry_at:
            return False
        try:
            self.sandbox.prepare(pod)
        except Exception as e:
            message = f"could not set the pod up on the local node: {describe(e)}"
            self.setup_retry_at = time.monotonic() + self.setup_backoff.delay(0)
            for slot in self.slots:
                if slot.process is None and slot.status.last_exit is None:
                    slot.status = replace(slot.status, state=Waiting("ContainerCreating", message))
            self._warn("FailedCreatePodSandBox", message)
            return False
        self.sandbox_ready = True
        return True

    # Containers.

    def _start(self, slot: Slot, pod: Pod) -> None:
        """Start one container with the pod's runtime; on failure, why, in its status."""
        name = slot.spec.name
        try:
            env = container_env(pod, slot.spec, self.sandbox.placement(), self.api)
        except EnvError as e:
            self._wait_and_retry(slot, "CreateContainerConfigError", str(e), f"Error: {e}")
            return
        env = {**self.sandbox.node_env(pod), **env}
        restarts = slot.status.restart_count + (slot.status.last_exit is not None)
        header = f"pod {pod.key} container {name} starts (restartCount {restarts})"
        start = (
            self._start_container if self.sandbox.runtime == "container" else self._start_process
        )
        now = utcnow()
        try:
            running = start(slot, pod, env, restarts, header)
        except CommandError as e:
            slot.status = replace(slot.status, state=Waiting("CreateContainerError", str(e)))
            slot.next_start = math.inf
            self._warn("Failed", str(e))
            return
        except (ContainerConfigError, VolumeError) as e:
            self._wait_and_retry(slot, "CreateContainerConfigError", str(e), f"Error: {e}")
            return
        except ImageMissing as e:
            pulling = isinstance(slot.status.state, Waiting) and slot.status.state.reason in PULL
            reason = "ImagePullBackOff" if pulling else "ErrImagePull"
            self._wait_and_retry(slot, reason, str(e), str(e))
            return
        except OSError as e:
            slot.status = replace(slot.status, restart_count=restarts, container_id="")
            self._exited(slot, pod, Terminated(*START_ERROR, now, now, str(e)), 0.0, True)
            self._warn("Failed", f"Error: {e}")
            return
        slot.process = running
        slot.status = replace(
            slot.status,
            state=Running(running.started_at),
            last_terminated=slot.status.last_exit,
            restart_count=restarts,
            container_id=running.container_id,
            image_id=running.image_id,
        )
        log.info("pod %s: container %s started (%s)", pod.key, name, running.container_id)
        self._event(pod, "Normal", "Started", f"Started container {name}")

    def _wait_and_retry(self, slot: Slot, reason: str, message: str, event: str) -> None:
        slot.status = replace(slot.status, state=Waiting(reason, message))
        slot.next_start = time.monotonic() + slot.backoff.delay(0)
        self._warn("Failed", event)

    def _start_process(
        self, slot: Slot, pod: Pod, env: dict[str, str], restarts: int, header: str
    ) -> RunningContainer:
        argv = without_init(command_line(slot.spec, env))
        workdir = Path(slot.spec.working_dir) if slot.spec.working_dir else self.sandbox.dir
        cwd = workdir if workdir.is_dir() else self.sandbox.dir
        search = [str(self.context.bin_dir), *env.get("PATH", "").split(":")]
        executable = find_executable(argv[0], search, cwd)
        if executable is None:
            raise FileNotFoundError(
                f'exec: "{argv[0]}": executable file not found in {self.context.bin_dir} or $PATH'
            )
        pidfile = self.sandbox.dir / f"{slot.spec.name}.pid"
        return start_process(argv, executable, env, cwd, self.sandbox.log_path, pidfile, header)

    def _start_container(
        self, slot: Slot, pod: Pod, env: dict[str, str], restarts: int, header: str
    ) -> RunningContainer:
        mounts = container_mounts(slot.spec, self.sandbox.mounts)
        name = container_name(pod.namespace, pod.name, pod.uid, slot.spec.name, restarts)
        return self.sandbox.podman.start(
            name, slot.spec, env, mounts, pod.name, pod.uid, self.sandbox.log_path, header
        )

    def _reap(self, slot: Slot, pod: Pod, restart: bool) -> None:
        process = slot.process
        if process is None:
            return
        code = process.poll()
        if code is None:
            return
        slot.process = None
        log.info("pod %s: container %s exited with code %d", pod.key, slot.spec.name, code)
        now = utcnow()
        if process.start_error:
            end = Terminated(*START_ERROR, now, now, process.start_error)
            self._warn("Failed", f"Error: {process.start_error}")
        else:
            end = exited(code, process.started_at, now, process.oom_killed)
        self._exited(slot, pod, end, process.ran_for(), restart)

    def _exited(self, slot: Slot, pod: Pod, end: Terminated, ran_for: float, restart: bool) -> None:
        if not (restart and should_restart(pod.restart_policy, end.exit_code, slot.init)):
            slot.status = replace(slot.status, state=end)
            return
        delay = slot.backoff.delay(ran_for)
        slot.next_start = time.monotonic() + delay
        message = (
            f"back-off {delay:g}s restarting failed container={slot.spec.name} "
            f"pod={pod.name}_{pod.namespace}({pod.uid})"
        )
        slot.status = replace(
            slot.status, state=Waiting("CrashLoopBackOff", message), last_terminated=end
        )
        self._event(pod, "Warning", "BackOff", message)

    def _stop_processes(self, grace: float) -> None:
        """SIGTERM every process group, SIGKILL what is left once the grace period is over.

        What happens meanwhile cuts it short: a deletion with a shorter grace period, a force
        deletion, or the agent stopping (its processes must not outlive it).
        """
        running = [slot for slot in self.slots if slot.process is not None]
        for slot in running:
            if slot.process is not None:
                slot.process.stop(self._grace_left(grace))
        began, killed = time.monotonic(), grace <= 0
        while True:
            for slot in running:
                self._reap(slot, self.pod, restart=False)
            if all(slot.process is None for slot in running):
                return
            if not killed and time.monotonic() - began >= self._grace_left(grace):
                _signal(running, signal.SIGKILL)
                killed = True
            time.sleep(0.05)

    def _grace_left(self, grace: float) -> float:
        pod = self.pod
        if self._killed:
            return 0
        if pod.deletion_requested:
            grace = min(grace, pod.grace_seconds)
        if self._agent_stopping:
            grace = min(grace, self.context.shutdown_grace)
        return grace

    # Status and events.

    def _publish(self, pod: Pod, stopping: bool = False) -> None:
        if self.reported_final:
            return
        init = tuple(s.status for s in self.slots if s.init)
        app = tuple(s.status for s in self.slots if not s.init)
        phase = pod_phase(pod.restart_policy, init, app, stopping)
        now = utcnow()
        conditions = pod_conditions(init, app, phase, self.sandbox_ready, self.condition_times, now)
        self.condition_times = {c.type: (c.to_json()["status"], c.since) for c in conditions}
        ip = self.sandbox.pod_ip
        report = PodReport(phase, HOST_IP, ip, self.start_time, conditions, init, app)
        patch = report.status_patch()
        if phase in TERMINAL:
            self.final = True
        if patch == self.published:
            return
        if not self.api.patch_pod_status(pod, patch):
            log.info("pod %s: gone from the API before its status could be reported", pod.key)
        if self.published is None or self.published["status"]["phase"] != phase:
            log.info("pod %s: phase %s", pod.key, phase)
        self.published = patch
        self.reported_final = phase in TERMINAL

    def _event(self, pod: Pod, kind: str, reason: str, message: str) -> None:
        self.api.event(pod, kind, reason, message)

    def _warn(self, reason: str, message: str) -> None:
        """A Warning event and log line, once per distinct message."""
        if message in self._warned:
            return
        self._warned.add(message)
        pod = self.pod
        log.warning("pod %s: %s: %s", pod.key, reason, message)
        self._event(pod, "Warning", reason, message)
