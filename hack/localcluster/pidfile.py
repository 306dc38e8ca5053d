"""Pidfiles that never signal a recycled pid, and the one /proc parser they rely on.

A pidfile holds `<pid> <start ticks>`: the kernel's start time of the process (field 22 of
/proc/<pid>/stat). A pid is only ever signalled when the process running under it now has
that same start time, so a pidfile left by a crash can't make us kill an unrelated process
that got the pid since. The control plane's components and the node's container processes
both use it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

POLL_SECONDS = 0.05


@dataclass(frozen=True)
class ProcStat:
    state: str
    start_ticks: int

    @property
    def alive(self) -> bool:
        """Running, not a zombie waiting for its parent to reap it."""
        return self.state not in ("Z", "X")


def proc_stat(pid: int) -> ProcStat | None:
    """State and start time of `pid`, None if there is no such process.

    The command name (field 2) may hold spaces and parentheses: fields are counted from the
    last ")".
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return ProcStat(fields[0], int(fields[19]))


def start_ticks(pid: int) -> int | None:
    """The start time of a live (non-zombie) process, None when there is none."""
    stat = proc_stat(pid)
    return stat.start_ticks if stat is not None and stat.alive else None


def process_exited(pid: int) -> bool:
    """True once the process has exited (a zombie left for its parent to reap counts)."""
    return start_ticks(pid) is None


def write(path: Path, pid: int) -> None:
    path.write_text(f"{pid} {start_ticks(pid) or 0}\n")


def read_live(path: Path) -> int | None:
    """The pid recorded in `path` if that very process still runs, else None."""
    try:
        pid_text, ticks_text = path.read_text().split()
        pid, ticks = int(pid_text), int(ticks_text)
    except (OSError, ValueError):
        return None
    return pid if start_ticks(pid) == ticks else None


def signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop_groups(pidfiles: Iterable[Path], grace: float) -> list[int]:
    """SIGTERM the process groups of the live pids in `pidfiles`, SIGKILL what is left after
    `grace` seconds; the pidfiles are removed. Returns the pids that were running."""
    alive: list[tuple[int, int]] = []
    for path in pidfiles:
        pid = read_live(path)
        path.unlink(missing_ok=True)
        ticks = start_ticks(pid) if pid is not None else None
        if pid is not None and ticks is not None:
            signal_group(pid, signal.SIGTERM)
            alive.append((pid, ticks))
    found = [pid for pid, _ in alive]
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        alive = [(pid, ticks) for pid, ticks in alive if start_ticks(pid) == ticks]
    for pid, _ in alive:
        signal_group(pid, signal.SIGKILL)
    return found
