"""Container processes: backoff, exit codes, executable lookup, logs and leftover cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from localcluster.pidfile import start_ticks
from localcluster.podprocess import (
    Backoff,
    exit_code,
    find_executable,
    start_process,
    stop_leftovers,
    without_init,
)

IGNORES_SIGTERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(120)
"""


def test_backoff_doubles_from_one_second_up_to_thirty() -> None:
    backoff = Backoff()
    assert [backoff.delay(0.5) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]


def test_backoff_starts_over_after_a_long_run_or_a_reset() -> None:
    backoff = Backoff()
    backoff.delay(0), backoff.delay(0), backoff.delay(0)
    assert backoff.delay(60.0) == 1
    assert backoff.delay(1.0) == 2
    backoff.reset()
    assert backoff.delay(1.0) == 1


def test_exit_codes_of_signalled_processes_are_128_plus_the_signal() -> None:
    assert exit_code(-signal.SIGKILL) == 137
    assert exit_code(-signal.SIGTERM) == 143
    assert exit_code(3) == 3


def _tool(directory: Path, name: str, mode: int = 0o755) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return path


def test_executables_are_found_in_the_bin_dir_before_the_path(tmp_path: Path) -> None:
    venv, system = tmp_path / "venv", tmp_path / "usr"
    _tool(system, "tool")
    mine = _tool(venv, "tool")
    _tool(venv, "notexec", mode=0o644)
    other = _tool(system, "notexec")
    search = [str(venv), str(system)]
    assert find_executable("tool", search, tmp_path) == mine
    assert find_executable("notexec", search, tmp_path) == other
    assert find_executable("absent", search, tmp_path) is None


def test_paths_with_a_slash_are_taken_relative_to_the_working_dir(tmp_path: Path) -> None:
    script = _tool(tmp_path / "bin", "run.sh")
    assert find_executable("bin/run.sh", [], tmp_path) == tmp_path / "bin" / "run.sh"
    assert find_executable(str(script), [], Path("/")) == script
    assert find_executable("./missing.sh", [], tmp_path) is None


def test_a_process_logs_to_the_pod_log_and_reports_its_exit(
    tmp_path: Path, wait_for: Callable[..., object]
) -> None:
    log, pidfile = tmp_path / "pod.log", tmp_path / "main.pid"
    process = start_process(
        ["sh", "-c", 'echo "out $GREETING"; echo err >&2; exit 3'],
        Path("/bin/sh"),
        {"GREETING": "hello", "PATH": "/usr/bin:/bin"},
        tmp_path,
        log,
        pidfile,
        "container main starts",
    )
    assert pidfile.read_text().split()[0] == str(process.pid)
    assert os.getpgid(process.pid) == process.pid
    code = wait_for(lambda: process.poll(), timeout=10, message="the process to exit")
    assert code == 3
    assert not pidfile.exists()
    lines = log.read_text().splitlines()
    assert "container main starts" in lines[0]
    assert lines[1:3] == ["out hello", "err"]
    assert f"process {process.pid} exited with code 3" in lines[3]


def test_leftover_process_groups_are_stopped_but_recycled_pids_are_not(
    tmp_path: Path, wait_for: Callable[..., object]
) -> None:
    stubborn = subprocess.Popen(
        [sys.executable, "-c", IGNORES_SIGTERM],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    bystander = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        (tmp_path / "a" / "main.pid").write_text(f"{stubborn.pid} {start_ticks(stubborn.pid)}\n")
        # Same pid, another start time: a pid the kernel gave to someone else since.
        (tmp_path / "b" / "main.pid").write_text(f"{bystander.pid} 1\n")

        stop_leftovers(tmp_path.glob("*/*.pid"), grace=0.3)

        assert wait_for(lambda: stubborn.poll() is not None, timeout=10, message="SIGKILL")
        assert stubborn.returncode == -signal.SIGKILL
        assert bystander.poll() is None
        assert not list(tmp_path.glob("*/*.pid"))
    finally:
        for process in (stubborn, bystander):
            process.kill()
            process.wait()


def test_the_process_runtime_runs_a_command_without_its_init() -> None:
    assert without_init(["tini", "--", "collectjob-worker", "run"]) == ["collectjob-worker", "run"]
    assert without_init(["collectjob-worker", "run"]) == ["collectjob-worker", "run"]
    assert without_init(["tini", "collectjob-worker"]) == ["tini", "collectjob-worker"]
