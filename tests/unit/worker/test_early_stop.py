"""A stop that reaches the worker while it starts is kept, even as PID 1 of its namespace.

The kernel drops a signal sent to a PID namespace's init that has no handler for it, as a
container's PID 1 is. The worker runs here as PID 1 of a new PID namespace (`unshare`, as
the container runtime does) and reads its schema from a FIFO, so the test knows the worker
is inside its start-up (its source and sink not opened, no chunk begun) when it sends SIGTERM.
"""

from __future__ import annotations

import errno
import json
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


def test_sigterm_to_pid_1_during_start_up_stops_before_the_first_chunk(
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
        os.write(writer, json.dumps({"columns": [{"name": "id"}]}).encode())
        os.close(writer)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "suspended at" in stderr, stderr
    assert "done:" not in stderr, stderr
    assert not list((tmp_path / "sink").glob("part-*")), "no chunk may start after the stop"
