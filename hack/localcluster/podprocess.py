"""Container processes on the local node: start, reap, signal, and clean up after a crash.

Each container is one process in a session of its own, so that its whole process group can be
signalled like a container's cgroup, with stdout and stderr appended to the pod's log file.
A pidfile per container (pidfile.py: pid and kernel start time) lets a restarted agent stop
the processes a previous agent left behind without ever signalling a recycled pid.

This is the process runtime, the node's fallback: processes run as the agent's own user and
a pod's securityContext is validated by the API server's Pod Security admission but not
enforced (no namespaces, cgroups or seccomp filters); podcontainer.py enforces it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from collectjob_api.backoff import Backoff as SharedBackoff
from localcluster import pidfile as pidfile_module
from localcluster.pidfile import signal_group

log = logging.getLogger(__name__)


class RunningContainer(Protocol):
    """What the node follows of a started container, whichever runtime started it."""

    started_at: datetime
    container_id: str
    image_id: str
    oom_killed: bool
    start_error: str
    """Why the container never started (set once poll() returned), else empty."""

    def ran_for(self) -> float: ...

    def poll(self) -> int | None: ...

    def signal(self, sig: signal.Signals) -> None: ...

    def stop(self, grace: float) -> None: ...


@dataclass
class Backoff:
    """Restart delays: `initial`, doubling up to `cap`, back to `initial` after a long run.

    The schedule is the project's one (collectjob_api.backoff); this adds what a kubelet's
    restart backoff has on top: counting failures, and forgetting them after a long run.
    """

    initial: float = 1.0
    cap: float = 30.0
    reset_after: float = 60.0
    _failures: int = field(default=0, repr=False)

    def delay(self, ran_for: float) -> float:
        if ran_for >= self.reset_after:
            self._failures = 0
        self._failures += 1
        return SharedBackoff(initial=self.initial, maximum=self.cap).delay(self._failures)

    def reset(self) -> None:
        self._failures = 0


def exit_code(returncode: int) -> int:
    """A shell-style exit code: a process killed by signal N exited with 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


INIT = ("tini", "--")
"""The init an image's pods run first (PID 1 in a container: it forwards signals to the real
command, which may not have its handlers yet, and reaps)."""


def without_init(argv: Sequence[str]) -> list[str]:
    """A container's command as the process runtime runs it: without the init in front, which
    the host need not have (the node agent itself delivers signals to the process)."""
    return list(argv[len(INIT) :] if tuple(argv[: len(INIT)]) == INIT else argv)


def find_executable(name: str, search_path: Sequence[str], cwd: Path) -> Path | None:
    """`command[0]` as an exec would find it: a path as given, else the first match on the path."""
    if "/" in name:
        candidate = cwd / name
        return candidate if _executable(candidate) else None
    for directory in search_path:
        candidate = Path(directory) / name
        if directory and _executable(candidate):
            return candidate
    return None


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def append_log(path: Path, line: str) -> None:
    with path.open("a") as f:
        f.write(f"==== {datetime.now(UTC).isoformat(timespec='milliseconds')} {line} ====\n")


class ContainerProcess:
    """One running container: its process group, its pidfile, and when it started."""

    def __init__(
        self, popen: subprocess.Popen[bytes], pidfile: Path, log_path: Path, executable: Path
    ) -> None:
        self.popen = popen
        self.pidfile = pidfile
        self.log_path = log_path
        self.container_id = f"local://{popen.pid}"
        self.image_id = f"local://{executable}"
        self.oom_killed = False
        self.start_error = ""
        self.started_at = datetime.now(UTC)
        self.started_monotonic = time.monotonic()
        pidfile_module.write(pidfile, popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def ran_for(self) -> float:
        return time.monotonic() - self.started_monotonic

    def poll(self) -> int | None:
        """The exit code once the process has exited; whatever it left in its group is killed."""
        returncode = self.popen.poll()
        if returncode is None:
            return None
        signal_group(self.pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)
        code = exit_code(returncode)
        append_log(self.log_path, f"process {self.pid} exited with code {code}")
        return code

    def signal(self, sig: signal.Signals) -> None:
        if self.popen.returncode is None:
            signal_group(self.pid, sig)

    def stop(self, grace: float) -> None:
        """SIGTERM (SIGKILL with no grace); the caller kills what is left after the grace."""
        self.signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)


def start_process(
    argv: Sequence[str],
    executable: Path,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    pidfile: Path,
    header: str,
) -> ContainerProcess:
    """Start a container's process; raises OSError when it cannot be executed."""
    append_log(log_path, header)
    with log_path.open("ab") as out:
        popen = subprocess.Popen(
            list(argv),
            executable=str(executable),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            close_fds=True,
        )
    return ContainerProcess(popen, pidfile, log_path, executable)


def stop_leftovers(pidfiles: Iterable[Path], grace: float) -> None:
    """Stop the process groups a previous agent left (SIGTERM, then SIGKILL after `grace`)."""
    for pid in pidfile_module.stop_groups(pidfiles, grace):
        log.info("stopped process group %d left by a previous agent", pid)
