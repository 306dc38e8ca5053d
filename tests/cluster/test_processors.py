"""Processors through the operator on the real local cluster: suspend/resume, kill -9 of the
worker mid-processor, a failing processor, an unknown name, and drop-duplicates across a
resume. Each output is compared with the processor applied to the whole file at once."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from collectjob_example_processor import enrich_responses

from localcluster.image import PROCESSORS_IMAGE

pytestmark = pytest.mark.cluster
WITH_PROCESSORS = {"image": PROCESSORS_IMAGE}
"""The workers run the image with the example and test processors installed, as a team
adds its processors to an image of its own (localcluster.image.processors_image)."""

CHUNK = 1 << 20
THROTTLE = {"bytesPerSecond": 2 * CHUNK}
"""About half a second per chunk: slow enough to act mid-way, fast enough for a test."""


def survey_csv(path: Path, rows: int, duplicate_every: int = 0) -> Path:
    """response_id,respondent,score,country; every 97th score is out of range."""
    with path.open("w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["response_id", "respondent", "score", "country", "comment"])
        for i in range(rows):
            key = i // duplicate_every if duplicate_every else i
            score = "11" if i % 97 == 5 else str(i % 11)
            comment = "fine, thanks\nsecond line" if i % 13 == 0 else "x" * (i % 40)
            out.writerow([f"{key:08d}", f"r{i % 5000:05d}", score, "de", comment])
    return path


class _Context(SimpleNamespace):
    def reject(self, rows: Any, reason: str) -> Any:
        self.rejected.update(dict.fromkeys(rows.index, reason))
        return rows.index


def whole_file(path: Path) -> tuple[list[dict[str, str]], int]:
    """The example processor on the whole file at once: rows out, and how many it rejected."""
    frame = pd.read_csv(path, dtype="string[pyarrow]", keep_default_na=False)
    context = _Context(options={}, rejected={}, log=logging.getLogger("test"))
    out = enrich_responses(frame, context)
    return json.loads(out.to_json(orient="records")), len(context.rejected)


def jsonl_rows(sink: Path) -> list[dict[str, Any]]:
    """The rows of every part under `sink` in order (rejects are `rejects/part-*.jsonl`)."""
    rows: list[dict[str, Any]] = []
    for part in sorted(sink.glob("part-*.jsonl")):
        rows += [json.loads(line) for line in part.read_text().splitlines() if line]
    return rows


def source_spec(path: Path) -> dict[str, str]:
    return {"url": f"file://{path}"}


def test_example_processor_suspended_and_resumed_equals_the_whole_file_at_once(
    operator, collectjob, tmp_path, wait_for
):
    source = survey_csv(tmp_path / "survey.csv", 120_000)
    job = collectjob(
        "survey",
        worker=WITH_PROCESSORS,
        rows=1,
        source=source_spec(source),
        chunkBytes=CHUNK,
        throttle=THROTTLE,
        process={"name": "enrich-responses"},
    )
    wait_for(
        lambda: job.checkpoint().chunk_index >= 1,
        timeout=120,
        message="the first chunk to be committed",
    )
    job.patch({"suspend": True})
    wait_for(lambda: job.phase() == "Suspended", timeout=90, message="phase Suspended")
    suspended_at = job.checkpoint()
    assert 0 < suspended_at.offset < suspended_at.bytes_total, "suspended mid-way"
    job.patch({"suspend": False})
    wait_for(lambda: job.phase() == "Succeeded", timeout=180, message="phase Succeeded")
    expected, rejected = whole_file(source)
    assert jsonl_rows(job.sink) == expected
    assert job.status()["rowsRejected"] == rejected > 0
    reasons = {r["reason"] for r in jsonl_rows(job.sink / "rejects")}
    assert reasons == {"score is not a whole number from 0 to 10"}


def test_worker_killed_during_a_slow_processor_gives_exact_output(
    operator, collectjob, core_api, namespace, tmp_path, wait_for
):
    source = survey_csv(tmp_path / "survey.csv", 80_000)
    job = collectjob(
        "slow",
        worker=WITH_PROCESSORS,
        rows=1,
        source=source_spec(source),
        chunkBytes=CHUNK,
        process={"name": "test-slow", "options": {"seconds": 3}},
    )
    pod = wait_for(job.running_pod, timeout=120, message="the worker pod")
    wait_for(
        lambda: job.checkpoint().chunk_index >= 1,
        timeout=120,
        message="the first chunk to be committed",
    )
    # Force deletion is the kubelet's SIGKILL: the processor is mid-way through a chunk.
    core_api.delete_namespaced_pod(pod["metadata"]["name"], namespace, grace_period_seconds=0)
    wait_for(lambda: job.phase() == "Succeeded", timeout=240, message="phase Succeeded")
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    out = jsonl_rows(job.sink)
    assert [r["response_id"] for r in out] == frame["response_id"].tolist()


def test_a_processor_that_raises_fails_the_job_with_its_error_in_status(
    operator, collectjob, tmp_path, wait_for
):
    source = survey_csv(tmp_path / "survey.csv", 80_000)
    job = collectjob(
        "buggy",
        worker=WITH_PROCESSORS,
        rows=1,
        source=source_spec(source),
        chunkBytes=CHUNK,
        backoffLimit=1,
        process={"name": "test-fail-on-chunk", "options": {"chunk": 1}},
    )
    wait_for(lambda: job.phase() == "Failed", timeout=180, message="phase Failed")
    message = job.status()["message"]
    assert "'test-fail-on-chunk' failed on chunk 1" in message
    assert "RuntimeError: test processor failing on chunk 1 as asked" in message
    assert "2 attempt(s)" in message
    assert len(jsonl_rows(job.sink)) > 0, "the chunk before the failing one was kept"


def test_an_unknown_processor_fails_the_job_naming_the_installed_ones(
    operator, collectjob, wait_for
):
    job = collectjob("typo", rows=10, process={"name": "enrich-responsez"}, worker=WITH_PROCESSORS)
    wait_for(lambda: job.phase() == "Failed", timeout=120, message="phase Failed")
    message = job.status()["message"]
    assert "'enrich-responsez' is not installed" in message
    assert "enrich-responses" in message.split("installed:")[1]


def test_drop_duplicates_across_a_suspend_and_resume_leaves_no_duplicate_keys(
    operator, collectjob, tmp_path, wait_for
):
    source = survey_csv(tmp_path / "survey.csv", 120_000, duplicate_every=3)
    job = collectjob(
        "dedupe",
        worker=WITH_PROCESSORS,
        rows=1,
        source=source_spec(source),
        chunkBytes=CHUNK,
        throttle=THROTTLE,
        process={"name": "drop-duplicates", "options": {"columns": ["response_id"]}},
    )
    wait_for(
        lambda: job.checkpoint().chunk_index >= 1,
        timeout=120,
        message="the first chunk to be committed",
    )
    job.patch({"suspend": True})
    wait_for(lambda: job.phase() == "Suspended", timeout=90, message="phase Suspended")
    job.patch({"suspend": False})
    wait_for(lambda: job.phase() == "Succeeded", timeout=180, message="phase Succeeded")
    keys = [r["response_id"] for r in jsonl_rows(job.sink)]
    assert len(keys) == len(set(keys)) == 40_000
    assert job.status()["rowsRejected"] == 80_000
