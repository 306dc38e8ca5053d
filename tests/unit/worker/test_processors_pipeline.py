"""Processors inside the worker's loop: suspend/resume, kill -9 and rejects keep their promise."""

from __future__ import annotations

import csv
import io
import json
import random

import pandas as pd
import pytest

from collectjob_api.contract import ProcessConfig
from collectjob_worker.errors import PermanentError
from collectjob_worker.processors import ProcessorError, ProcessorRunner
from collectjob_worker.processors.runner import JobRef

JOB = JobRef("dedupe", "test", "uid-1")


def duplicated_csv(rows: int, keys: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["key", "value"])
    for i in range(rows):
        writer.writerow([f"k{rng.randrange(keys)}", f"v{i},\n{i}" if i % 7 == 0 else f"v{i}"])
    return out.getvalue().encode()


def whole_file_dedupe(data: bytes) -> list[list[str]]:
    frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    return frame.drop_duplicates(subset=["key"]).values.tolist()


def runner(jobs, name: str, options: dict) -> ProcessorRunner:
    return ProcessorRunner(ProcessConfig(name, options), JOB)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_drop_duplicates_across_suspend_and_resume_equals_the_whole_file_at_once(
    jobs, outputs, fmt
):
    data = duplicated_csv(3000, keys=800)
    source = jobs.write(data)
    options = {"columns": ["key"]}
    first = jobs.job(
        source, fmt=fmt, chunk_bytes=4096, processor=runner(jobs, "drop-duplicates", options)
    )
    jobs.run_until(first, chunks=3)
    assert 0 < jobs.state().offset < len(data)
    # A new process resumes, as a resumed worker pod would.
    resumed = jobs.job(
        source, fmt=fmt, chunk_bytes=4096, processor=runner(jobs, "drop-duplicates", options)
    )
    jobs.run(resumed)
    sink = jobs.tmp / "sink"
    assert outputs.values(sink, fmt, ["key", "value"]) == whole_file_dedupe(data)
    rejects = outputs.rejects(sink, fmt)
    assert len(rejects) == 3000 - len(whole_file_dedupe(data))
    assert {r["reason"] for r in rejects} == {"duplicate key (key)"}
    # Each reject names the source line its record starts on.
    source_lines = data.decode().split("\n")
    for reject in rejects:
        assert source_lines[int(reject["line"]) - 1] == reject["record"].split("\n")[0]
    manifest = json.loads((sink / "_manifest.json").read_text())
    assert manifest["columns"] == ["key", "value"]


def test_a_processor_adding_a_column_changes_the_parts_and_the_manifest(jobs, outputs, monkeypatch):
    monkeypatch.setenv("PII_KEY", "0123456789abcdef0123")
    data = duplicated_csv(500, keys=50)
    job = jobs.job(
        jobs.write(data),
        fmt="parquet",
        chunk_bytes=2048,
        processor=runner(jobs, "hash-columns", {"columns": ["key"], "keyEnv": "PII_KEY"}),
    )
    jobs.run(job)
    names, rows = outputs.parts(jobs.tmp / "sink", "parquet")
    assert names == ["key", "value"] and len(rows) == 500
    assert all(len(row["key"]) == 64 for row in rows)
    assert len({row["key"] for row in rows}) == len({row[0] for row in whole_file_dedupe(data)})


def test_a_failing_processor_fails_the_job_with_its_error_recorded(jobs):
    def explode(frame, context):
        if context.chunk_index == 1:
            raise KeyError("no such customer")
        return frame

    spec = ProcessConfig("explode", {})
    job = jobs.job(
        jobs.write(duplicated_csv(400, keys=400)),
        chunk_bytes=1024,
        processor=ProcessorRunner(spec, JOB, attempts=2, processor=explode),
    )
    with pytest.raises(ProcessorError) as e:
        jobs.pipeline(job).run()
    assert isinstance(e.value, PermanentError)
    recorded = jobs.state()
    assert recorded.chunk_index == 1
    assert "'explode' failed on chunk 1" in recorded.error
    assert "KeyError" in recorded.error and "2 attempt(s)" in recorded.error


@pytest.mark.parametrize("trial", range(3))
def test_drop_duplicates_is_exact_under_kill_9(worker_cli, tmp_path, trial):
    rng = random.Random(trial)
    data = duplicated_csv(4000, keys=1500, seed=trial)
    source, sink, state = tmp_path / "source.csv", tmp_path / "sink", tmp_path / "state.json"
    source.write_bytes(data)
    args = ["local", "--source", str(source), "--sink", str(sink), "--state", str(state)]
    args += ["--chunk-bytes", "2048", "--process", "drop-duplicates"]
    args += ["--process-options", '{"columns": ["key"]}']
    kills, _ = worker_cli.run_killed(args, state, rng, kills=3, step=6)
    assert kills >= 1
    frame = pd.concat(
        pd.read_csv(p, dtype=str, keep_default_na=False) for p in sorted(sink.glob("part-*.csv"))
    )
    assert frame.values.tolist() == whole_file_dedupe(data)


def test_local_mode_names_an_unknown_processor_and_the_installed_ones(worker_cli, tmp_path):
    source = tmp_path / "s.csv"
    source.write_bytes(b"a\n1\n")
    result = worker_cli.run(
        "local",
        "--source",
        str(source),
        "--sink",
        str(tmp_path / "out"),
        "--state",
        str(tmp_path / "st.json"),
        "--process",
        "no-such-processor",
    )
    assert result.returncode == 2, result.stderr
    assert "'no-such-processor' is not installed" in result.stderr
    installed = result.stderr.split("installed: ")[1].splitlines()[0]
    assert {"drop-duplicates", "hash-columns"} <= {n.strip(",") for n in installed.split()}
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("part-*"))
