"""Exactly once under kill -9 at random moments, with the real CLI in subprocesses.

Each trial runs `collectjob-worker local` and SIGKILLs it at random moments (mid-chunk,
mid-write, mid-commit: wherever it happens to be) until a run completes by itself; the
output is then compared row by row with the source.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess

import pytest

from collectjob_worker.ownership import OWNER_MARKER

TRIALS = 6
KILLS_PER_TRIAL = 3


def _chunk_index(state) -> int:
    try:
        return int(json.loads(state.read_text())["chunk_index"])
    except (FileNotFoundError, ValueError):
        return -1


@pytest.mark.parametrize("trial", range(TRIALS))
def test_exactly_once_under_kill_9(worker_cli, outputs, rows_csv, waiter, tmp_path, trial) -> None:
    rng = random.Random(trial)
    data = rows_csv(2500, seed=trial)
    source, sink, state = tmp_path / "source.csv", tmp_path / "sink", tmp_path / "state.json"
    source.write_bytes(data)
    chunk_bytes = rng.choice([1024, 3000, 8192])
    args = ["local", "--source", str(source), "--sink", str(sink), "--state", str(state)]
    args += ["--chunk-bytes", str(chunk_bytes), "--min-commit-seconds", "0"]

    kills = 0
    for _ in range(KILLS_PER_TRIAL + 1):
        proc = worker_cli.start(*args)
        if kills < KILLS_PER_TRIAL:
            target = _chunk_index(state) + rng.randint(1, 8)
            waiter(
                lambda proc=proc, target=target: (
                    proc.poll() is not None or _chunk_index(state) >= target
                ),
                60,
                f"chunk {target} to be committed",
            )
            try:
                proc.wait(timeout=rng.uniform(0, 0.03))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.communicate(timeout=30)
                kills += 1
                continue
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "done:" in err
        break
    assert kills >= 1, "the run finished before it could be killed; make the source larger"

    expected = outputs.expected(data)
    assert outputs.values(sink, "csv", expected.header) == expected.rows
    manifest = json.loads((sink / "_manifest.json").read_text())
    assert manifest["rows"] == len(expected.rows)
    files = sorted(p.relative_to(sink).as_posix() for p in sink.rglob("*") if p.is_file())
    assert files == sorted(
        [
            "_SUCCESS",
            "_manifest.json",
            OWNER_MARKER,
            *(c["part"]["path"] for c in manifest["chunks"]),
        ]
    )
