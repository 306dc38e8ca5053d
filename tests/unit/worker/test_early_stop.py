"""A stop that reaches the worker while it starts ends it at once, even as PID 1 of its
namespace.

The kernel drops a signal sent to a PID namespace's init that has no handler for it, as a
container's PID 1 is. The worker runs here as PID 1 of a new PID namespace (`unshare`, as
the container runtime does) and reads its schema from a FIFO, so the test knows the worker
is inside its start-up (its source and sink not opened, no chunk begun) when it sends SIGTERM.
The schema is never written: a worker that only recorded the stop and went on starting would
wait on the FIFO for good, so an exit at all shows the stop ended the start-up.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from pathlib import Path

from unit.worker.cli_args import local_args


def _open_writer(fifo: str) -> int | None:
    """The FIFO's write end once a reader has it open, else None (ENXIO)."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ENXIO:
            return None
        raise


def test_sigterm_to_pid_1_during_start_up_exits_at_once_having_written_nothing(
    worker_cli, rows_csv, tmp_path, waiter
):
    (tmp_path / "source.csv").write_bytes(rows_csv(2000))
    schema = tmp_path / "schema.json"
    os.mkfifo(schema)
    args = worker_cli.command(*local_args(tmp_path, 1024, "--schema", str(schema)))
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writer: int | None = None

    def schema_opened() -> bool:
        nonlocal writer
        writer = _open_writer(str(schema))
        return writer is not None or proc.poll() is not None

    try:
        waiter(schema_opened, 60, "the worker to open its schema")
        assert writer is not None, proc.communicate()
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1, children
        os.kill(int(children[0]), signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if writer is not None:
            os.close(writer)
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "SIGTERM while starting: exiting before any work, nothing written" in stderr, stderr
    assert not (tmp_path / "sink").exists() or not any((tmp_path / "sink").iterdir())
    assert not (tmp_path / "state.json").exists(), "a starting worker writes no checkpoint"
