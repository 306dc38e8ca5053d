"""Exactly once under kill -9 at random moments, with the real CLI in subprocesses.

Each trial runs `collectjob-worker local` and SIGKILLs it at random moments (mid-chunk,
mid-write, mid-commit: wherever it happens to be) until a run completes by itself; the
output is then compared row by row with the source.
"""

from __future__ import annotations

import json
import random

import pytest

from collectjob_worker.ownership import OWNER_MARKER

TRIALS = 6
KILLS_PER_TRIAL = 3


@pytest.mark.parametrize("trial", range(TRIALS))
def test_exactly_once_under_kill_9(worker_cli, outputs, rows_csv, tmp_path, trial) -> None:
    rng = random.Random(trial)
    data = rows_csv(2500, seed=trial)
    source, sink, state = tmp_path / "source.csv", tmp_path / "sink", tmp_path / "state.json"
    source.write_bytes(data)
    chunk_bytes = rng.choice([1024, 3000, 8192])
    args = ["local", "--source", str(source), "--sink", str(sink), "--state", str(state)]
    args += ["--chunk-bytes", str(chunk_bytes), "--min-commit-seconds", "0"]

    kills, err = worker_cli.run_killed(args, state, rng, KILLS_PER_TRIAL, step=8)
    assert "done:" in err
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
