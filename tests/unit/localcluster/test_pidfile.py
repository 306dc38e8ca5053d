"""Pidfiles never lead to signalling a recycled pid; the /proc parser reads odd names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from localcluster import pidfile

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_live_process_is_found_by_pid_and_start_time(tmp_path: Path) -> None:
    proc = subprocess.Popen(SLEEPER, start_new_session=True)
    try:
        path = tmp_path / "x.pid"
        pidfile.write(path, proc.pid)
        assert pidfile.read_live(path) == proc.pid
        pid, ticks = path.read_text().split()
        path.write_text(f"{pid} {int(ticks) + 1}\n")  # the same pid, another process
        assert pidfile.read_live(path) is None
        assert pidfile.stop_groups([path], grace=0.5) == []
        assert proc.poll() is None, "a pid whose start time differs is never signalled"
    finally:
        proc.kill()
        proc.wait()


def test_stop_groups_ends_recorded_processes_and_removes_the_pidfiles(tmp_path: Path) -> None:
    proc = subprocess.Popen(SLEEPER, start_new_session=True)
    path = tmp_path / "x.pid"
    pidfile.write(path, proc.pid)
    assert pidfile.stop_groups([path, tmp_path / "missing.pid"], grace=5) == [proc.pid]
    assert proc.wait(timeout=5) == -15
    assert not path.exists()
    assert pidfile.process_exited(proc.pid)


def test_proc_stat_counts_fields_from_the_last_parenthesis(tmp_path: Path) -> None:
    script = tmp_path / "a) b (c"
    script.write_text("import time; time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script)])
    try:
        stat = pidfile.proc_stat(proc.pid)
        assert stat is not None and stat.alive and stat.start_ticks > 0
    finally:
        proc.kill()
        proc.wait()
    assert pidfile.proc_stat(2**22 + 1) is None
