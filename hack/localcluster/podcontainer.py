"""Containers on the local node: a pod's container run by podman + runc from its image.

`run_argv` turns a container spec into one `podman run` command line (pure, unit-tested);
`PodmanRuntime` checks the image, starts the container attached (its stdout and stderr go
to the pod's log file, as in process mode) and `PodmanContainer` follows it to its exit and
removes it. The exit code is `podman run`'s own; `podman inspect` is asked only when the
container never started or was killed (OOMKilled). Stops and signals go to the container's
init through a pidfd: on a node stopping 100 containers at once, the podman commands a stop
used to run (stop, inspect) were most of the node's CPU.

What a kubelet with a CRI runtime does, and this does too:
  - command overrides the image's ENTRYPOINT, args its CMD, `$(VAR)` expanded;
  - securityContext: runAsUser/Group (else the image's USER), runAsNonRoot refusal (a
    CreateContainerConfigError), readOnlyRootFilesystem (no tmpfs added: /tmp is writable
    only if a volume is mounted there), capabilities drop/add, allowPrivilegeEscalation:
    false as no-new-privileges, seccomp RuntimeDefault as podman's default profile
    (Unconfined when unset, as a kubelet without --seccomp-default), supplementalGroups;
  - resources.limits.memory as podman's --memory (and --memory-swap); an OOM kill is
    reported as OOMKilled, from podman or else from the kernel's record (oomrecord.py);
  - an image missing from the local store is ErrImagePull: nothing is ever pulled;
  - a container that never started (its command not found, a missing workingDir) is a
    StartError with podman's message, never the exit code 0 that podman inspect shows for
    a container it created but could not start.
What it does not: networking is the host's (never a bridge, which would change the host's
firewall), so pods share the host's loopback; the pod IP is a loopback address of its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from signal import Signals
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from localcluster.containertools import exits_dir, run_tool
from localcluster.oomrecord import oom_killed_by_kernel
from localcluster.podenv import expand
from localcluster.podprocess import append_log
from localcluster.podspec import Container, SecurityContext

log = logging.getLogger(__name__)

NODE_LABEL = "dev.collectjob.local-node"
NODE_STATE_LABEL = "dev.collectjob.node-state"
"""The agent's state directory: which local cluster a container belongs to. Clusters of other
checkouts share the podman store and the node name, so leftovers are found by this label."""
POD_UID_LABEL = "io.kubernetes.pod.uid"
# Variables podman itself reads: a pod's value for them goes on the command line instead.
PODMAN_OWN_ENV = ("PATH", "HOME", "TMPDIR", "CONTAINERS_", "XDG_", "BUILDAH_", "LANG", "LC_")
RUN_TIMEOUT = 60
# The states of a container podman created but never started.
NEVER_STARTED = ("created", "configured", "initialized")
NOT_YET_RUNNING = ("", *NEVER_STARTED)
"""States a stop waits out ("": podman run has not created the container yet)."""
STOP_POLL_SECONDS = 0.05
EXEC_POLL_SECONDS = 0.005
RUNC_INIT_COMM = "runc:["
"""How runc names its own init process (`runc:[2:INIT]`) until it execs the entrypoint."""


class ImageMissing(Exception):
    """The image is not in the local store, and the local node never pulls."""


class ContainerConfigError(Exception):
    """The container's configuration forbids running it (e.g. runAsNonRoot with uid 0)."""


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool


@dataclass(frozen=True)
class ImageInfo:
    id: str
    user: str


def container_user(security: SecurityContext, image_user: str) -> str:
    """`uid:gid` (or the image's USER when nothing overrides it); checks runAsNonRoot."""
    name, _, group = image_user.partition(":")
    uid: int | str | None = security.run_as_user
    if uid is None:
        uid = name or "0"
    if security.run_as_non_root:
        if not str(uid).isdigit():
            raise ContainerConfigError(
                f"container has runAsNonRoot and image has non-numeric user ({uid}), "
                "cannot verify user is non-root"
            )
        if int(uid) == 0:
            raise ContainerConfigError("container has runAsNonRoot and image will run as root")
    gid = security.run_as_group if security.run_as_group is not None else (group or None)
    if gid is None and security.run_as_user is not None:
        gid = 0  # as a CRI runtime: runAsUser without runAsGroup and no image group is gid 0
    return f"{uid}:{gid}" if gid is not None else str(uid)


def memory_bytes(limits: Mapping[str, str]) -> int | None:
    raw = limits.get("memory")
    return int(Decimal(parse_quantity(raw))) if raw else None


def security_args(security: SecurityContext) -> list[str]:
    args: list[str] = []
    if security.privileged:
        return ["--privileged"]
    if security.read_only_root:
        args += ["--read-only", "--read-only-tmpfs=false"]
    args += [f"--cap-drop={c}" for c in security.cap_drop]
    args += [f"--cap-add={c}" for c in security.cap_add]
    if not security.allow_privilege_escalation:
        args += ["--security-opt", "no-new-privileges"]
    if security.seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    elif security.seccomp != "RuntimeDefault":
        raise ContainerConfigError(
            f"seccomp profile type {security.seccomp!r} is not supported by the local node"
        )
    args += [f"--group-add={g}" for g in security.supplemental_groups]
    if security.fs_group is not None:
        args.append(f"--group-add={security.fs_group}")
    return args


def run_argv(
    name: str,
    spec: Container,
    user: str,
    env: Mapping[str, str],
    mounts: Sequence[Mount],
    hostname: str,
    labels: Mapping[str, str],
) -> list[str]:
    """The `podman run` command line of one container (env values are passed by name only,
    so that no Secret appears in a process listing; podman reads them from its own env)."""
    argv = [
        "podman",
        "run",
        "--name",
        name,
        "--pull=never",
        "--network=host",
        f"--hostname={hostname}",
        f"--user={user}",
        "--log-driver=none",
        "--stop-signal=SIGTERM",
        "--init=false",
        "--tty=false",
    ]
    argv += [f"--label={k}={v}" for k, v in sorted(labels.items())]
    argv += security_args(spec.security)
    memory = memory_bytes(spec.limits)
    if memory is not None:
        argv += [f"--memory={memory}", f"--memory-swap={memory}"]
    for mount in mounts:
        mode = "ro" if mount.read_only else "rw"
        argv += ["--volume", f"{mount.source}:{mount.target}:{mode}"]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}" if key.startswith(PODMAN_OWN_ENV) else key]
    if spec.working_dir:
        argv.append(f"--workdir={spec.working_dir}")
    if spec.command:
        argv.append(f"--entrypoint={json.dumps([expand(c, env) for c in spec.command])}")
    argv.append(spec.image)
    argv += [expand(a, env) for a in spec.args]
    return argv


def container_name(namespace: str, pod: str, uid: str, container: str, restarts: int) -> str:
    """As a kubelet names them, so `podman ps` reads like `crictl ps`."""
    return f"k8s_{container}_{pod}_{namespace}_{uid[:8]}_{restarts}"


class PodmanContainer:
    """One container started by `podman run` (attached): followed to its exit, then removed."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        name: str,
        image_id: str,
        log_path: Path,
        tool_env: Mapping[str, str],
        log_offset: int,
    ) -> None:
        """`log_offset`: the log's size when podman started, where its own output begins."""
        self.popen = popen
        self.name = name
        self.log_path = log_path
        self.tool_env = tool_env
        self.exits_dir = exits_dir(tool_env)
        self.started_at = datetime.now(UTC)
        self.started_monotonic = time.monotonic()
        self.container_id = f"podman://{name}"
        self.image_id = image_id
        self.oom_killed = False
        self.start_error = ""
        self._log_offset = log_offset
        self._stopper: threading.Thread | None = None
        self._full_id = ""
        """The container's full id, once podman has reported it started."""
        self._init: int | None = None
        """A pidfd of the container's init, once podman reports it running: signals go to
        that very process (never to a pid reused after it exited) without a podman command,
        which costs a fraction of a CPU-second on a busy node, per container."""
        self._init_lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def ran_for(self) -> float:
        return time.monotonic() - self.started_monotonic

    def poll(self) -> int | None:
        """The container's exit code once it has exited (then it is removed), else None.

        A container being stopped counts as exited as soon as its runtime monitor (conmon)
        has recorded its exit status, not once `podman run` has cleaned up after it: on a
        node stopping 100 containers, podman's cleanup and removal, serialized on its locks,
        came 20-30 s after the containers had died, and every pod's deletion waited for
        them. What is left of a stopped container (its last output, its removal) is not
        waited for; a running one's output is, up to the exit of `podman run`."""
        returncode = self.popen.poll()
        if returncode is None and self._stopper is not None:
            returncode = self._recorded_exit()
        if returncode is None:
            return None
        self._close_init()
        if self._full_id and returncode != 137:
            # `podman run` attached exits with its container's exit code: nothing to inspect.
            code = returncode
        else:
            container_id, state = self._inspect()
            if state.get("Status") in NEVER_STARTED:
                self.start_error = self._podman_error() or (
                    f"podman run exited {returncode} before the container started"
                )
            code = int(state.get("ExitCode", returncode)) if state else returncode
            self.oom_killed = bool(state.get("OOMKilled")) or (
                code == 137 and oom_killed_by_kernel(container_id or self._full_id)
            )
        self._remove_in_background()
        suffix = " (OOMKilled)" if self.oom_killed else ""
        append_log(self.log_path, f"container {self.name} exited with code {code}{suffix}")
        return code

    def _recorded_exit(self) -> int | None:
        """The exit status conmon wrote for the container when it died, if it has."""
        if not self._full_id:
            return None
        try:
            return int((self.exits_dir / self._full_id).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _remove_in_background(self) -> None:
        """Let `podman run` end, then remove the container, off the pod's critical path.
        A removal cut short by the agent's own exit is done by the next agent's start
        (`PodmanRuntime.remove_leftovers`)."""

        def remove() -> None:
            try:
                self.popen.wait(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
            run_tool(["podman", "rm", "--force", "--ignore", self.name], self.tool_env, check=False)

        threading.Thread(target=remove, name=f"remove {self.name}", daemon=True).start()

    def _podman_error(self) -> str:
        """podman's own `Error: ...` line, from what it wrote to the log since this start."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            lines = log.read().decode(errors="replace").splitlines()
        errors = [line.removeprefix("Error: ") for line in lines if line.startswith("Error: ")]
        return errors[-1] if errors else ""

    def _inspect(self) -> tuple[str, dict[str, Any]]:
        """The container's full id and its state ({} while podman does not have it)."""
        result = run_tool(
            ["podman", "inspect", "--format", "{{.Id}} {{json .State}}", self.name],
            self.tool_env,
            check=False,
        )
        if result.returncode != 0:
            return "", {}
        container_id, _, state = result.stdout.strip().partition(" ")
        return container_id, dict(json.loads(state))

    def signal(self, sig: signal.Signals) -> None:
        if self.popen.poll() is None and not self._signal_init(sig):
            run_tool(
                ["podman", "kill", f"--signal={sig.name}", self.name], self.tool_env, check=False
            )

    def _signal_init(self, sig: Signals) -> bool:
        """Signal the container's init through its pidfd; False if there is none (podman
        has not reported the container running). An init already gone is not an error."""
        with self._init_lock:
            if self._init is None:
                return False
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._init, sig)
            return True

    def _close_init(self) -> None:
        with self._init_lock:
            if self._init is not None:
                os.close(self._init)
                self._init = None

    def stop(self, grace: float) -> None:
        """SIGTERM to the container's init, SIGKILL once the grace period is over, as `podman
        stop -t GRACE` does (which the stop falls back to if it has no pidfd of the init).

        A container that `podman run` is still creating cannot be signalled yet: `podman
        stop` finds none and does nothing, and the container then runs until the node kills
        it at the end of the grace period (a worker suspended within a second of its start
        processed its whole job). So the stop waits, in its own thread, until the container
        runs or is gone, as a kubelet waits for a container being created; the wait counts
        against the grace period."""
        if self.popen.poll() is None and self._stopper is None:
            deadline = time.monotonic() + grace
            self._stopper = threading.Thread(
                target=self._stop, args=(deadline,), name=f"stop {self.name}", daemon=True
            )
            self._stopper.start()

    def wait_started(self, timeout: float = RUN_TIMEOUT) -> None:
        """Return once podman has started the container, or `podman run` has ended, or after
        `timeout`. The node reports a container running from the runtime's state, as a
        kubelet does, not from the launch of `podman run`: a pod reported Running under load
        had no running container yet (podman inspect found it still being created)."""
        self._wait_out_creation(time.monotonic() + timeout)

    def _wait_out_creation(self, deadline: float) -> None:
        while not self._full_id and self.popen.poll() is None and time.monotonic() < deadline:
            container_id, state = self._inspect()
            if state.get("Status", "") not in NOT_YET_RUNNING:
                pid = int(state.get("Pid") or 0)
                while runc_still_in_init(pid) and time.monotonic() < deadline:
                    time.sleep(EXEC_POLL_SECONDS)  # the exec is a matter of milliseconds
                self._init = _pidfd(pid)
                self._full_id = container_id
                return
            time.sleep(STOP_POLL_SECONDS)

    def _stop(self, deadline: float) -> None:
        self._wait_out_creation(deadline)
        if self.popen.poll() is not None:
            return
        if self._signal_init(signal.SIGTERM):
            try:
                self.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal_init(signal.SIGKILL)
        else:
            grace = max(0, math.ceil(deadline - time.monotonic()))
            run_tool(
                ["podman", "stop", "--ignore", f"--time={grace}", self.name],
                self.tool_env,
                timeout=grace + RUN_TIMEOUT,
                check=False,
            )


class PodmanRuntime:
    """Starts pods' containers with podman, from the local image store only."""

    def __init__(self, tool_env: Mapping[str, str], node_name: str, state_dir: Path) -> None:
        self.tool_env = dict(tool_env)
        self.node_name = node_name
        self.state_dir = state_dir.resolve()

    def version(self) -> str:
        """`podman://<version>`, as a kubelet reports `containerd://<version>`."""
        result = run_tool(["podman", "version", "--format", "{{.Client.Version}}"], self.tool_env)
        return f"podman://{result.stdout.strip()}"

    def image(self, image: str) -> ImageInfo:
        result = run_tool(
            ["podman", "image", "inspect", "--format", "{{.Id}} {{.Config.User}}", image],
            self.tool_env,
            check=False,
        )
        if result.returncode != 0:
            raise ImageMissing(
                f'Failed to pull image "{image}": the local node never pulls, and its store '
                "has no such image (build it with `make image`)"
            )
        image_id, _, user = result.stdout.strip().partition(" ")
        return ImageInfo(f"sha256:{image_id}", user.strip())

    def start(
        self,
        name: str,
        spec: Container,
        env: Mapping[str, str],
        mounts: Sequence[Mount],
        hostname: str,
        pod_uid: str,
        log_path: Path,
        header: str,
    ) -> PodmanContainer:
        """Start the container; ImageMissing, ContainerConfigError or OSError if it can't."""
        info = self.image(spec.image)
        user = container_user(spec.security, info.user)
        labels = {
            NODE_LABEL: self.node_name,
            NODE_STATE_LABEL: str(self.state_dir),
            POD_UID_LABEL: pod_uid,
        }
        argv = run_argv(name, spec, user, env, mounts, hostname, labels)
        run_tool(["podman", "rm", "--force", "--ignore", name], self.tool_env, check=False)
        process_env = {**self.tool_env, **{k: v for k, v in env.items() if not _own(k)}}
        append_log(log_path, header)
        offset = log_path.stat().st_size
        with log_path.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                env=process_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        container = PodmanContainer(popen, name, info.id, log_path, self.tool_env, offset)
        container.wait_started()
        return container

    def remove_leftovers(self, grace: float) -> list[str]:
        """Stop and remove the containers a previous agent of this node left running: only
        this cluster's (its state directory), never those of another cluster on the host."""
        listed = run_tool(
            [
                "podman",
                "ps",
                "--all",
                "--format",
                "{{.Names}}",
                "--filter",
                f"label={NODE_STATE_LABEL}={self.state_dir}",
            ],
            self.tool_env,
            check=False,
        )
        names = listed.stdout.split()
        if names:
            run_tool(
                ["podman", "rm", "--force", f"--time={round(grace)}", *names],
                self.tool_env,
                check=False,
                timeout=grace + RUN_TIMEOUT,
            )
        return names


def runc_still_in_init(pid: int) -> bool:
    """Whether `pid` is still runc's own init, not yet the container's entrypoint.

    podman reports a container running once `runc start` has released the init, a moment
    before that init (named `runc:[2:INIT]`, a Go program catching every signal) execs the
    entrypoint. A SIGTERM sent in that moment is taken by runc and lost: a worker deleted
    right after its start ran its whole job until the SIGKILL at the end of its grace period
    (tests/cluster/test_operator_recovery.py, under load). So the container counts as started
    only after the exec. A pid that is gone (0, or exited) is not in init."""
    if pid <= 0:
        return False
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith(RUNC_INIT_COMM)
    except OSError:
        return False


def _pidfd(pid: int) -> int | None:
    """A pidfd of `pid`, or None if it is 0 (podman reports no process) or already gone."""
    try:
        return os.pidfd_open(pid) if pid > 0 else None
    except ProcessLookupError:
        return None


def _own(key: str) -> bool:
    return key.startswith(PODMAN_OWN_ENV)
