"""The pipeline's guarantees: resume by seeking, exactly once, fencing, loud failures."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from collectjob_api.checkpoint import Checkpoint
from collectjob_worker.checkpoint_store import FileCheckpointStore
from collectjob_worker.errors import CheckpointConflict, SinkError, SourceChanged
from collectjob_worker.metrics import WorkerMetrics
from collectjob_worker.ownership import OwnedSink
from collectjob_worker.pipeline import (
    COALESCE_GROWTH,
    JSONL_LOCAL_BLOCK_BYTES,
    MAX_COALESCED_BYTES,
    MIN_CHUNK_BYTES,
    MIN_COMMIT_SECONDS,
    TAPER_STEPS,
    Outcome,
    Pipeline,
    next_chunk_size,
    tapered,
)
from collectjob_worker.sources import FileSource


def _assert_exactly_once(outputs, jobs, data: bytes) -> None:
    expected = outputs.expected(data)
    assert outputs.values(jobs.tmp / "sink", "csv", expected.header) == expected.rows
    manifest = json.loads((jobs.tmp / "sink" / "_manifest.json").read_text())
    listed = sorted(c["part"]["path"] for c in manifest["chunks"] if c["part"])
    assert listed == sorted(p.name for p in (jobs.tmp / "sink").glob("part-*"))


class _NetworkSource:
    """Block-size attributes of a network source: one request per block."""

    block_bytes = 8 << 20
    rereads_cheaply = False


def test_json_lines_from_a_local_file_take_smaller_blocks_and_a_network_source_keeps_its_own(
    jobs,
) -> None:
    path = jobs.write(b"a\n1\n")
    local = {fmt: jobs.job(path, fmt=fmt).block_bytes for fmt in ("csv", "parquet", "jsonl")}
    assert local == {
        "csv": FileSource.block_bytes,
        "parquet": FileSource.block_bytes,
        "jsonl": JSONL_LOCAL_BLOCK_BYTES,
    }
    assert FileSource.block_bytes > JSONL_LOCAL_BLOCK_BYTES
    remote = dataclasses.replace(jobs.job(path, fmt="jsonl"), source=_NetworkSource())
    assert remote.block_bytes == _NetworkSource.block_bytes


def test_resume_seeks_to_the_offset_and_never_reads_the_prefix(
    jobs, outputs, recording, rows_csv
) -> None:
    data = rows_csv(3000)
    source = jobs.write(data)
    first = jobs.run_until(jobs.job(source, chunk_bytes=4096), chunks=5)
    offset = first.checkpoint.offset
    assert first.checkpoint.chunk_index == 5 and 0 < offset < len(data)

    job = jobs.job(source, chunk_bytes=4096)
    spy = recording(job.source)
    resumed = jobs.run(dataclasses.replace(job, source=spy))

    assert min(start for start, _ in spy.reads) == offset
    assert resumed.checkpoint.rows_processed == 3000
    _assert_exactly_once(outputs, jobs, data)


def test_chunk_cut_is_the_same_on_redo_after_a_crash_before_commit(jobs, outputs, rows_csv):
    """Kill between 'part written' and 'checkpoint committed': the redo writes the same part."""
    data = rows_csv(2000, seed=3)
    source = jobs.write(data)
    jobs.run_until(jobs.job(source, chunk_bytes=8192), chunks=2)
    store = jobs.job(source).store

    class Crash(Exception):
        pass

    class CrashOnSave(FileCheckpointStore):
        def save(self, checkpoint, version):
            raise Crash

    job = jobs.job(source, chunk_bytes=8192, store=CrashOnSave(jobs.tmp / "state.json"))
    with pytest.raises(Crash):
        jobs.pipeline(job).run()
    # The acquisition itself failed: nothing written. Now crash after the part is written.
    saves = []

    class CrashOnSecondSave(FileCheckpointStore):
        def save(self, checkpoint, version):
            saves.append(checkpoint.chunk_index)
            if len(saves) == 2:
                raise Crash
            return super().save(checkpoint, version)

    job = jobs.job(source, chunk_bytes=8192, store=CrashOnSecondSave(jobs.tmp / "state.json"))
    with pytest.raises(Crash):
        jobs.pipeline(job).run()
    assert store.load().checkpoint.chunk_index == 2
    crashed_part = (jobs.tmp / "sink" / "part-000002.csv").read_bytes()

    jobs.run(jobs.job(source, chunk_bytes=8192))
    assert (jobs.tmp / "sink" / "part-000002.csv").read_bytes() == crashed_part
    _assert_exactly_once(outputs, jobs, data)


def test_source_changed_between_suspend_and_resume_is_permanent(jobs, rows_csv) -> None:
    data = rows_csv(500)
    source = jobs.write(data)
    jobs.run_until(jobs.job(source, chunk_bytes=2048), chunks=1)
    committed = sorted(p.name for p in (jobs.tmp / "sink").glob("part-*"))
    source.write_bytes(data + b"500,late,row,00500\n")

    with pytest.raises(SourceChanged, match="changed since the checkpoint") as caught:
        Pipeline(
            jobs.job(source, chunk_bytes=2048), WorkerMetrics("t", "j"), threading.Event()
        ).run()
    assert "refusing to mix two versions" in str(caught.value)
    state = jobs.state()
    assert "changed since the checkpoint" in state.error and not state.done
    assert state.chunk_index == 1
    assert sorted(p.name for p in (jobs.tmp / "sink").glob("part-*")) == committed
    with pytest.raises(SourceChanged):
        jobs.pipeline(jobs.job(source)).run()


def test_a_rerun_after_the_source_is_restored_clears_the_error(jobs, outputs, rows_csv):
    """A permanent error is recorded, not a verdict on every rerun: its cause may be fixed."""
    data = rows_csv(500)
    source = jobs.write(data)
    jobs.run_until(jobs.job(source, chunk_bytes=2048), chunks=1)
    original = source.stat()
    source.write_bytes(data.replace(b"name", b"NAME", 1))
    with pytest.raises(SourceChanged):
        jobs.pipeline(jobs.job(source, chunk_bytes=2048)).run()
    assert "changed since the checkpoint" in jobs.state().error

    source.write_bytes(data)
    os.utime(source, ns=(original.st_atime_ns, original.st_mtime_ns))
    finished = jobs.run(jobs.job(source, chunk_bytes=2048))
    assert finished.checkpoint.error == "" and finished.checkpoint.done
    assert jobs.state().error == ""
    _assert_exactly_once(outputs, jobs, data)


def test_a_stop_during_the_last_chunk_never_finalises(jobs, outputs, recording, rows_csv):
    """SIGTERM while the last chunk runs: it commits, but no manifest, _SUCCESS or `done`
    until a rerun, which finalises without reading the source again."""
    data = rows_csv(300)
    source = jobs.write(data)
    stop = threading.Event()

    def stop_on_the_last_chunk(cp) -> None:
        if cp.chunk_index > 0 and cp.offset == cp.bytes_total:
            stop.set()

    job = jobs.job(source, chunk_bytes=1024)
    pipeline = Pipeline(job, WorkerMetrics("t", "j"), stop, stop_on_the_last_chunk)
    assert pipeline.run() is Outcome.STOPPED
    state = jobs.state()
    assert state.offset == len(data) and not state.done
    sink = jobs.tmp / "sink"
    assert not (sink / "_manifest.json").exists() and not (sink / "_SUCCESS").exists()

    job = jobs.job(source, chunk_bytes=1024)
    spy = recording(job.source)
    resumed = jobs.run(dataclasses.replace(job, source=spy))
    assert spy.reads == []
    assert resumed.checkpoint.done and resumed.checkpoint.chunk_index == state.chunk_index
    assert (sink / "_SUCCESS").exists()
    _assert_exactly_once(outputs, jobs, data)


def test_unwritable_sink_fails_clearly_and_loses_nothing(jobs, outputs, rows_csv) -> None:
    data = rows_csv(600, seed=5)
    source = jobs.write(data)
    sink = jobs.job(source).sink
    assert isinstance(sink, OwnedSink)
    sink.claim()  # the obstacle goes into the job's own sink
    obstacle = jobs.tmp / "sink" / "part-000001.csv"
    obstacle.mkdir(parents=True)
    (obstacle / "in-the-way").write_text("x")

    with pytest.raises(SinkError, match=r"cannot write .*part-000001\.csv: ") as caught:
        Pipeline(
            jobs.job(source, chunk_bytes=2048), WorkerMetrics("t", "j"), threading.Event()
        ).run()
    assert "directory" in str(caught.value).lower()
    state = jobs.state()
    assert state.chunk_index == 1 and not state.error

    (obstacle / "in-the-way").unlink()
    obstacle.rmdir()
    jobs.run(jobs.job(source, chunk_bytes=2048))
    _assert_exactly_once(outputs, jobs, data)


def test_a_second_worker_fences_the_first(jobs, outputs, rows_csv) -> None:
    """A takes the job, B takes it over mid-run and finishes; A's next commit is refused."""
    data = rows_csv(1500, seed=7)
    source = jobs.write(data)
    b_may_start, b_finished = threading.Event(), threading.Event()

    def a_commits(cp) -> None:
        if cp.chunk_index == 1:
            b_may_start.set()
            assert b_finished.wait(30)

    a = jobs.pipeline(jobs.job(source, chunk_bytes=2048, holder="worker-a"), a_commits)
    with ThreadPoolExecutor(1) as pool:
        a_run = pool.submit(a.run)
        assert b_may_start.wait(30)
        b = jobs.run(jobs.job(source, chunk_bytes=2048, holder="worker-b"))
        b_finished.set()
        with pytest.raises(CheckpointConflict, match="worker-b"):
            a_run.result(30)

    assert a.metrics.conflicts._value.get() == 1
    assert b.checkpoint.done and b.checkpoint.holder == "worker-b"
    assert b.checkpoint.epoch == a.checkpoint.epoch + 1
    _assert_exactly_once(outputs, jobs, data)


def test_two_workers_starting_together_only_one_acquires(jobs) -> None:
    store = FileCheckpointStore(jobs.tmp / "state.json")
    a, b = store.load(), store.load()
    store.save(a.checkpoint.evolve(holder="a", epoch=1), a.version)
    with pytest.raises(CheckpointConflict, match="updated by another worker \\(a, epoch 1\\)"):
        store.save(b.checkpoint.evolve(holder="b", epoch=1), b.version)


def test_done_job_is_never_processed_again(jobs, recording, rows_csv) -> None:
    source = jobs.write(rows_csv(100))
    jobs.run(jobs.job(source))
    before = {p.name: p.stat().st_mtime_ns for p in (jobs.tmp / "sink").iterdir()}
    job = jobs.job(source)
    spy = recording(job.source)
    pipeline = jobs.pipeline(dataclasses.replace(job, source=spy))
    assert pipeline.run() is Outcome.DONE
    assert spy.reads == []
    assert {p.name: p.stat().st_mtime_ns for p in (jobs.tmp / "sink").iterdir()} == before


def test_finalize_is_repeatable_after_a_crash(jobs, outputs, rows_csv) -> None:
    """Crash after the manifest and cleanup, before `done` is committed: a rerun finishes."""
    data = rows_csv(300)
    source = jobs.write(data)

    class Crash(Exception):
        pass

    class CrashOnDone(FileCheckpointStore):
        def save(self, checkpoint, version):
            if checkpoint.done:
                raise Crash
            return super().save(checkpoint, version)

    job = jobs.job(source, chunk_bytes=1024, store=CrashOnDone(jobs.tmp / "state.json"))
    with pytest.raises(Crash):
        jobs.pipeline(job).run()
    assert not (jobs.tmp / "sink" / "_ledger").exists()
    assert jobs.run(jobs.job(source, chunk_bytes=1024)).checkpoint.done
    _assert_exactly_once(outputs, jobs, data)


def test_the_last_chunks_of_a_source_shrink_to_a_floor() -> None:
    limit = 64 << 20
    assert tapered(limit, 1 << 30, limit) == limit, "far from the end: as wanted"
    assert tapered(limit, 100 << 20, limit) == 50 << 20, "half of what remains"
    assert tapered(limit, 10 << 20, limit) == limit // TAPER_STEPS, "never below the floor"
    assert tapered(1 << 20, 10 << 20, limit) == 1 << 20, "never above what was wanted"


def test_each_chunk_is_at_most_half_of_what_remained_or_the_floor(jobs, rows_csv) -> None:
    data = rows_csv(40_000)
    limit = 1 << 18
    assert len(data) > 4 * limit
    jobs.run(jobs.job(jobs.write(data), chunk_bytes=limit))
    chunks = json.loads((jobs.tmp / "sink" / "_manifest.json").read_text())["chunks"]
    assert len(chunks) > 4
    for chunk in chunks[1:]:
        start, end = chunk["source_start"], chunk["source_end"]
        floor = max(limit // TAPER_STEPS, MIN_CHUNK_BYTES)
        assert end - start <= max((len(data) - start) // 2, floor), chunk


def test_parquet_columns_are_required_where_no_value_can_be_null(jobs) -> None:
    """The parser makes no null, so an untyped column is required; so is a string column of
    a transform, while a typed one is null where its value is empty."""
    import pyarrow.parquet as pq

    source = jobs.write(b"a,b,n\nx,,1\ny,z,\n")
    jobs.run(jobs.job(source, fmt="parquet", sink=jobs.tmp / "plain"))
    plain = pq.read_table(jobs.tmp / "plain" / "part-000000.parquet")
    assert [f.nullable for f in plain.schema] == [False, False, False]
    assert plain.to_pydict() == {"a": ["x", "y"], "b": ["", "z"], "n": ["1", ""]}
    columns = [{"name": "a"}, {"name": "b", "maxLength": 3}, {"name": "n", "type": "integer"}]
    typed_sink = jobs.tmp / "typed"
    jobs.run(
        jobs.job(
            source,
            fmt="parquet",
            transform={"columns": columns},
            sink=typed_sink,
            store=FileCheckpointStore(jobs.tmp / "typed.json"),
        )
    )
    typed = pq.read_table(typed_sink / "part-000000.parquet")
    assert [f.nullable for f in typed.schema] == [False, False, True]
    assert typed.to_pydict() == {"a": ["x", "y"], "b": ["", "z"], "n": [1, None]}


def test_chunk_size_adapts_towards_one_second_within_bounds() -> None:
    limit = 64 << 20
    assert next_chunk_size(1 << 20, 0.1, limit, 0) == 2 << 20
    assert next_chunk_size(1 << 20, 2.0, limit, 0) == 1 << 19
    assert next_chunk_size(1 << 20, 100.0, limit, 0) == 1 << 18
    assert next_chunk_size(48 << 20, 0.1, limit, 0) == limit
    assert next_chunk_size(MIN_CHUNK_BYTES, 60.0, limit, 0) == MIN_CHUNK_BYTES
    assert next_chunk_size(4096, 0.0, 4096, 0) == 4096


def test_quick_chunks_are_coalesced_above_chunk_bytes() -> None:
    """A chunk is at least MIN_COMMIT_SECONDS of work at the measured rate, whatever the limit."""
    assert next_chunk_size(1024, 0.1, 1024) == int(1024 * MIN_COMMIT_SECONDS / 0.1)
    assert next_chunk_size(1024, 0.001, 1024) == 1024 * COALESCE_GROWTH
    assert next_chunk_size(32 << 20, 0.0, 1024) == MAX_COALESCED_BYTES
    assert next_chunk_size(1 << 30, 0.001, 1 << 30) == 1 << 30
    assert next_chunk_size(1 << 20, 2.0, 64 << 20) == 1 << 19


def test_tiny_chunk_bytes_do_not_mean_a_commit_per_kilobyte(jobs, outputs, rows_csv) -> None:
    data = rows_csv(60000)
    commits: list[Checkpoint] = []
    job = jobs.job(jobs.write(data), chunk_bytes=1024, min_commit_seconds=MIN_COMMIT_SECONDS)
    pipeline = jobs.pipeline(job, commits.append)
    assert pipeline.run() is Outcome.DONE
    _assert_exactly_once(outputs, jobs, data)
    assert len(data) > 1000 * 1024
    assert pipeline.checkpoint.chunk_index < 100 and len(commits) < 100


def test_metrics_follow_commits(jobs, rows_csv) -> None:
    from prometheus_client import generate_latest

    data = rows_csv(400)
    pipeline = jobs.run(jobs.job(jobs.write(data), chunk_bytes=4096))
    text = generate_latest(pipeline.metrics.registry).decode()
    labels = '{collectjob="job",namespace="test"}'
    assert f"collectjob_worker_rows_processed_total{labels} 400.0" in text
    assert f"collectjob_worker_rows_rejected_total{labels} 0.0" in text
    assert f"collectjob_worker_bytes_processed_total{labels} {float(len(data))}" in text
    assert f"collectjob_worker_progress_ratio{labels} 1.0" in text
    chunks = pipeline.checkpoint.chunk_index
    assert f"collectjob_worker_chunk_duration_seconds_count{labels} {float(chunks)}" in text
    commits = chunks + 2
    assert (
        f"collectjob_worker_checkpoint_write_duration_seconds_count{labels} {float(commits)}"
        in text
    )
    assert f"collectjob_worker_checkpoint_conflicts_total{labels} 0.0" in text
    assert "collectjob_worker_last_checkpoint_timestamp_seconds" + labels in text


def test_a_chunk_whose_bytes_are_not_all_accounted_for_fails_the_job(jobs, monkeypatch) -> None:
    from collectjob_worker.csvparse import ParsedBlock
    from collectjob_worker.errors import PermanentError

    honest = ParsedBlock.accounted

    def loses_a_byte(self, length, dropped):
        accepted, rejected = honest(self, length, dropped)
        return accepted - 1, rejected

    monkeypatch.setattr(ParsedBlock, "accounted", loses_a_byte)
    pattern = r"chunk 0 \(source bytes 4-12\) of .* is not fully accounted for"
    with pytest.raises(PermanentError, match=pattern):
        jobs.pipeline(jobs.job(jobs.write(b"a,b\n1,2\n3,4\n"))).run()
    assert not (jobs.tmp / "sink" / "_SUCCESS").exists()
    assert "not fully accounted for" in jobs.state().error


def test_cr_only_file_gives_its_rows_and_the_manifest_adds_up(jobs, outputs) -> None:
    data = b"a,b\r1,2\r3,4\r"
    jobs.run(jobs.job(jobs.write(data), fmt="jsonl"))
    assert outputs.parts(jobs.tmp / "sink", "jsonl")[1] == [
        {"a": "1", "b": "2"},
        {"a": "3", "b": "4"},
    ]
    manifest = json.loads((jobs.tmp / "sink" / "_manifest.json").read_text())
    assert (manifest["bytes_header"], manifest["bytes_accepted"], manifest["bytes_rejected"]) == (
        4,
        8,
        0,
    )


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_chunk_of_rejects_only_writes_no_part_and_its_ledger_accounts_for_it(jobs, fmt):
    """Checked before finalisation, which would also drop an empty part (one written by an
    older worker): an empty jsonl part is unreadable to pyarrow and DuckDB."""
    source = jobs.write(b"a,b\n1,2\nbad-record-1\nbad-record-2\n3,4\n")
    jobs.run_until(jobs.job(source, fmt=fmt, chunk_bytes=7), chunks=3)
    sink = jobs.tmp / "sink"
    assert jobs.state().chunk_index == 3
    entries = [json.loads((sink / f"_ledger/{i:06d}.json").read_text()) for i in range(3)]
    assert [e["part"] and e["part"]["rows"] for e in entries] == [1, None, None]
    assert [(e["bytes_accepted"], e["bytes_rejected"]) for e in entries] == [
        (4, 0),
        (0, 13),
        (0, 13),
    ]
    assert sorted(p.name for p in sink.glob("part-*")) == [f"part-000000.{fmt}"]
    assert sorted(p.name for p in (sink / "rejects").glob("part-*")) == [
        f"part-000001.{fmt}",
        f"part-000002.{fmt}",
    ]
