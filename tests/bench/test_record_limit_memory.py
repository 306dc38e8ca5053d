"""Memory of a worker meeting a record with no end (`make bench`).

A 300 MB file whose second record opens a quote that never closes (a line break every 100
bytes inside it). The worker must fail with a permanent error naming the line, and its peak
RSS must stay under its idle RSS (the same command on a two-line file) plus twice the record
limit. Peak RSS comes from the kernel's accounting of each child (os.wait4's ru_maxrss).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from collectjob_api.contract import DEFAULT_MAX_RECORD_BYTES, EXIT_OK, EXIT_PERMANENT_ERROR
from localcluster.paths import REPO_ROOT as ROOT

BENCH = ROOT / ".bench"
SIZE = 300_000_000


def _unterminated_source() -> Path:
    path = BENCH / "unterminated-300mb.csv"
    if not path.exists() or path.stat().st_size < SIZE:
        BENCH.mkdir(exist_ok=True)
        line = b"x" * 99 + b"\n"
        with open(path, "wb") as f:
            f.write(b'a,b\n1,"')
            for _ in range(SIZE // (len(line) * 10_000)):
                f.write(line * 10_000)
    return path


def _peak_rss(source: Path, work: Path) -> tuple[int, int, str]:
    """Exit code, peak RSS in bytes and stderr of `collectjob-worker local` on `source`."""
    command = [sys.executable, "-m", "collectjob_worker", "local", "--source", str(source)]
    command += ["--sink", str(work / "sink"), "--state", str(work / "state.json")]
    with open(work / "stderr", "w+") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return proc.returncode, usage.ru_maxrss * 1024, err.read()


def test_an_endless_record_costs_at_most_twice_the_record_limit(tmp_path: Path) -> None:
    small = tmp_path / "small.csv"
    small.write_bytes(b"a,b\n1,2\n")
    (tmp_path / "idle").mkdir()
    (tmp_path / "big").mkdir()
    code, idle, err = _peak_rss(small, tmp_path / "idle")
    assert code == EXIT_OK, err
    code, peak, err = _peak_rss(_unterminated_source(), tmp_path / "big")
    assert code == EXIT_PERMANENT_ERROR, err
    assert "the record starting at line 2 (byte 4) is longer than the maximum" in err
    limit = DEFAULT_MAX_RECORD_BYTES
    print(
        f"\nrecord limit {limit / 2**20:.0f} MiB: idle RSS {idle / 2**20:.0f} MiB, peak RSS on "
        f"a 300 MB unterminated record {peak / 2**20:.0f} MiB "
        f"(+{(peak - idle) / 2**20:.0f} MiB = {(peak - idle) / limit:.2f}x the limit; bound 2x)"
    )
    assert peak < idle + 2 * limit
