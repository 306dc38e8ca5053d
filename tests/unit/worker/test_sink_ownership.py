"""Sinks are owned: a job claims an empty directory with a marker at its first write, refuses
a directory that holds anything else or another job's marker, and its clean-up deletes only
what its own ledger recorded. Each test runs on a local directory and on S3 (moto's server).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from collectjob_worker.checkpoint_store import FileCheckpointStore
from collectjob_worker.manifest import ChunkRecord, PartFile
from collectjob_worker.ownership import OWNER_MARKER, OwnedSink, SinkNotOwned
from collectjob_worker.pipeline import Job
from collectjob_worker.retry import Backoff
from collectjob_worker.sinks import SinkStore, open_raw_sink, open_sink


@dataclasses.dataclass
class Place:
    """A sink location and how to put files there and see what is there, behind the
    worker's back (a plain directory, or the bucket through its own client)."""

    url: str
    write: Callable[[str, bytes], None]
    read: Callable[[str], bytes]
    names: Callable[[], list[str]]


@pytest.fixture(params=["file", "s3"])
def place(request, tmp_path: Path) -> Place:
    if request.param == "file":
        root = tmp_path / "shared-sink"

        def write(name: str, data: bytes) -> None:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)

        def names() -> list[str]:
            return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

        return Place(str(root), write, lambda n: (root / n).read_bytes(), names)
    store = request.getfixturevalue("s3_store")
    fs, prefix = store.fs(), f"{store.bucket}/shared-sink"

    def s3_names() -> list[str]:
        fs.invalidate_cache()
        return sorted(k.removeprefix(prefix + "/") for k in fs.find(prefix))

    return Place(
        f"s3://{prefix}",
        lambda n, d: fs.pipe_file(f"{prefix}/{n}", d),
        lambda n: fs.cat_file(f"{prefix}/{n}"),
        s3_names,
    )


def _job(jobs, data: bytes, place: Place, state: str) -> Job:
    store = FileCheckpointStore(jobs.tmp / state)
    job = jobs.job(jobs.write(data, f"{state}.csv"), chunk_bytes=2048, store=store)
    sink = open_sink(place.url, owner=store.owner_id(), backoff=Backoff(deadline=2))
    return dataclasses.replace(job, sink=sink)


def test_the_first_write_claims_the_sink_for_the_job(jobs, rows_csv, place) -> None:
    job = _job(jobs, rows_csv(200), place, "a.json")
    jobs.run(job)
    marker = json.loads(place.read(OWNER_MARKER))
    assert marker["owner"] == job.store.owner_id()
    assert marker["owner"] != FileCheckpointStore(jobs.tmp / "b.json").owner_id()
    jobs.run(job)  # the same job again: its own sink


def test_a_second_job_on_the_same_sink_is_refused_and_touches_nothing(
    jobs, rows_csv, place
) -> None:
    first = _job(jobs, rows_csv(300, seed=1), place, "a.json")
    jobs.run(first)
    before = {name: place.read(name) for name in place.names()}

    second = _job(jobs, rows_csv(100, seed=2), place, "b.json")
    with pytest.raises(SinkNotOwned, match=r"belongs to another job.*cannot share a sink"):
        jobs.pipeline(second).run()
    assert {name: place.read(name) for name in place.names()} == before
    error = FileCheckpointStore(jobs.tmp / "b.json").load().checkpoint.error
    assert "belongs to another job" in error


def test_a_non_empty_sink_without_a_marker_is_refused(jobs, rows_csv, place) -> None:
    foreign = {
        "part-000000.csv": b"someone else's",
        "rejects/part-000001.csv": b"x",
        "_ledger/000000.json": b"{}",
        "deep/down/.tmp-part-000001.csv-abcd1234": b"y",
    }
    for name, data in foreign.items():
        place.write(name, data)
    job = _job(jobs, rows_csv(100), place, "a.json")
    with pytest.raises(SinkNotOwned, match=f"is not empty .* has no {OWNER_MARKER}"):
        jobs.pipeline(job).run()
    assert {name: place.read(name) for name in place.names()} == foreign


def test_a_claim_killed_while_writing_its_marker_is_not_a_foreign_file(
    jobs, rows_csv, place
) -> None:
    """A worker killed between the marker's temporary file and its link leaves only that
    temporary: the restarted job claims the sink, runs, and its clean-up removes it."""
    leftover = f".tmp-{OWNER_MARKER}-0123abcd"
    place.write(leftover, b'{"owner": "half-writ')
    job = _job(jobs, rows_csv(200), place, "a.json")
    jobs.run(job)
    assert json.loads(place.read(OWNER_MARKER))["owner"] == job.store.owner_id()
    assert leftover not in place.names()


def test_two_jobs_racing_for_one_empty_sink_one_wins(jobs, place) -> None:
    sinks = [
        OwnedSink(open_raw_sink(place.url, Backoff(deadline=2)), f"owner-{i}") for i in range(4)
    ]
    start = threading.Barrier(len(sinks))
    outcomes: list[str] = []

    def claim(sink: OwnedSink) -> None:
        start.wait(10)
        try:
            sink.claim()
            outcomes.append(sink.owner)
        except SinkNotOwned:
            outcomes.append("refused")

    threads = [threading.Thread(target=claim, args=(s,)) for s in sinks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [o for o in outcomes if o != "refused"]
    assert len(outcomes) == 4 and len(winners) == 1
    assert json.loads(place.read(OWNER_MARKER))["owner"] == winners[0]


def test_clean_up_deletes_only_what_the_own_ledger_recorded(jobs, rows_csv, place) -> None:
    job = _job(jobs, rows_csv(50), place, "a.json")
    sink: SinkStore = job.sink
    assert isinstance(sink, OwnedSink)
    sink.claim()
    abandoned = ChunkRecord(
        77,
        0,
        10,
        PartFile("part-000077.csv", 1, 1, "0"),
        PartFile("rejects/part-000077.csv", 1, 1, "0"),
    )
    ours = {
        "_ledger/000077.json": abandoned.to_json().encode(),
        "part-000077.csv": b"abandoned attempt",
        "rejects/part-000077.csv": b"abandoned attempt",
        ".tmp-part-000003.csv-0123abcd": b"crashed write",
        "_ledger/.tmp-000003.json-0123abcd": b"crashed write",
    }
    unrecorded = {
        "part-000099.csv": b"no ledger names it",
        "rejects/part-000050.csv": b"no ledger names it",
        "notes.txt": b"not ours",
        "deep/below/.tmp-part-000001.csv-abcd1234": b"not reached: no recursive listing",
    }
    for name, data in {**ours, **unrecorded}.items():
        place.write(name, data)
    jobs.run(job)
    manifest = json.loads(place.read("_manifest.json"))
    parts = [c["part"]["path"] for c in manifest["chunks"]]
    assert place.names() == sorted(
        ["_SUCCESS", "_manifest.json", OWNER_MARKER, *parts, *unrecorded]
    )
    assert all(place.read(name) == data for name, data in unrecorded.items())
