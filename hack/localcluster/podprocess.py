"""Container processes on the local node: start, reap, signal, and clean up after a crash.

Each container is one process in a session of its own, so that its whole process group can be
signalled like a container's cgroup, with stdout and stderr appended to the pod's log file.
A pidfile per container (pid and kernel start time) lets a restarted agent stop the processes
a previous agent left behind without ever signalling a recycled pid.

The processes run as the agent's own user. A pod's securityContext (runAsUser, runAsNonRoot,
capabilities, seccomp, readOnlyRootFilesystem) is validated by the API server's Pod Security
admission but not enforced here: there are no namespaces, cgroups or seccomp filters.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Restart delays: `initial`, doubling up to `cap`, back to `initial` after a long run."""

    initial: float = 1.0
    cap: float = 30.0
    reset_after: float = 60.0
    _next: float = field(default=0.0, repr=False)

    def delay(self, ran_for: float) -> float:
        if self._next == 0.0 or ran_for >= self.reset_after:
            self._next = self.initial
        current = self._next
        self._next = min(current * 2, self.cap)
        return current

    def reset(self) -> None:
        self._next = 0.0


def exit_code(returncode: int) -> int:
    """A shell-style exit code: a process killed by signal N exited with 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


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


def start_ticks(pid: int) -> int | None:
    """The kernel's start time of a live (non-zombie) process, None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def append_log(path: Path, line: str) -> None:
    with path.open("a") as f:
        f.write(f"==== {datetime.now(UTC).isoformat(timespec='milliseconds')} {line} ====\n")


class ContainerProcess:
    """One running container: its process group, its pidfile, and when it started."""

    def __init__(self, popen: subprocess.Popen[bytes], pidfile: Path, log_path: Path) -> None:
        self.popen = popen
        self.pidfile = pidfile
        self.log_path = log_path
        self.started_at = datetime.now(UTC)
        self.started_monotonic = time.monotonic()
        pidfile.write_text(f"{popen.pid} {start_ticks(popen.pid) or 0}\n")

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
    return ContainerProcess(popen, pidfile, log_path)


def stop_leftovers(pidfiles: Iterable[Path], grace: float) -> None:
    """Stop the process groups recorded in `pidfiles` that still run: SIGTERM, then SIGKILL."""
    alive: list[tuple[int, int]] = []
    for pidfile in pidfiles:
        try:
            pid_text, ticks_text = pidfile.read_text().split()
            pid, ticks = int(pid_text), int(ticks_text)
        except (OSError, ValueError):
            continue
        finally:
            pidfile.unlink(missing_ok=True)
        if start_ticks(pid) == ticks:
            log.info("stopping process group %d left by a previous agent (%s)", pid, pidfile)
            signal_group(pid, signal.SIGTERM)
            alive.append((pid, ticks))
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [(pid, ticks) for pid, ticks in alive if start_ticks(pid) == ticks]
    for pid, _ in alive:
        signal_group(pid, signal.SIGKILL)
