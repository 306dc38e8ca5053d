"""The pipelined executor writes what the sequential one writes, and keeps the stop budget."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from collectjob_api.checkpoint import Checkpoint
from collectjob_api.contract import WorkerConfig
from collectjob_api.spec import CollectJobSpec
from collectjob_worker.checkpoint_store import FileCheckpointStore
from collectjob_worker.chunking import Block
from collectjob_worker.errors import SourceChanged
from collectjob_worker.formats import JsonlPart
from collectjob_worker.metrics import WorkerMetrics
from collectjob_worker.pipeline import MIN_CHUNK_BYTES, Outcome, Pipeline
from collectjob_worker.stages import (
    MAX_NICENESS,
    PARSER_NICENESS,
    BlockOutput,
    ChunkDone,
    ChunkStart,
    PipelinedChunks,
)

TRANSFORM = {
    "columns": [
        {"name": "id", "type": "integer", "required": True},
        {"name": "name", "maxLength": 11},
        {"name": "note", "allowed": ["plain", "a,b", "NA", "null", ""]},
        {"name": "code", "pattern": "^0[0-9]{4}$"},
    ]
}
CHUNK_BYTES = 4096
"""Below MIN_CHUNK_BYTES every window is chunkBytes, whatever the timing: equal cuts."""


def _source(jobs, rows_csv) -> Path:
    data = rows_csv(3000, seed=7)
    lines = data.split(b"\n")
    lines[40] += b",an extra field"
    lines[2500] = b"2498,\xff\xfe not utf-8,plain,00001"
    return jobs.write(b"\n".join(lines))


def _files(root: Path) -> dict[str, bytes]:
    """Everything the job wrote but the sink's ownership marker (it names the job's state)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != "_collectjob_owner.json"
    }


def _run(jobs, source: Path, name: str, fmt: str, transform, pipelined: bool) -> dict[str, bytes]:
    job = jobs.job(
        source,
        fmt=fmt,
        chunk_bytes=CHUNK_BYTES,
        transform=transform,
        sink=jobs.tmp / f"sink-{name}",
        store=FileCheckpointStore(jobs.tmp / f"state-{name}.json"),
    )
    job.source.block_bytes = 1000  # several blocks per chunk, parsed on several threads
    pipeline = Pipeline(job, WorkerMetrics("t", name), threading.Event(), pipelined=pipelined)
    assert pipeline.run() is Outcome.DONE
    return _files(jobs.tmp / f"sink-{name}")


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
@pytest.mark.parametrize("typed", [False, True], ids=["strings", "transform"])
def test_pipelined_parts_are_byte_identical_to_sequential(jobs, rows_csv, fmt, typed) -> None:
    assert CHUNK_BYTES < MIN_CHUNK_BYTES
    source = _source(jobs, rows_csv)
    transform = TRANSFORM if typed else None
    sequential = _run(jobs, source, "sequential", fmt, transform, pipelined=False)
    pipelined = _run(jobs, source, "pipelined", fmt, transform, pipelined=True)
    parts = [name for name in sequential if name.startswith("part-")]
    assert len(parts) > 20 and any(name.startswith("rejects/") for name in sequential)
    assert sorted(pipelined) == sorted(sequential)
    for name, data in sequential.items():
        assert pipelined[name] == data, f"{name} differs"


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
def test_the_manifest_holds_each_files_own_size_and_sha256(jobs, rows_csv, fmt, pipelined):
    """The part writers hash their bytes as they build them (formats.py); what the manifest
    records must still be the written files' own, for parts and rejects alike."""
    files = _run(jobs, _source(jobs, rows_csv), "hashed", fmt, TRANSFORM, pipelined=pipelined)
    manifest = json.loads(files["_manifest.json"])
    recorded = [
        entry
        for chunk in manifest["chunks"]
        for entry in (chunk["part"], chunk["rejects"])
        if entry is not None
    ]
    assert len(recorded) > 20 and any(e["path"].startswith("rejects/") for e in recorded)
    for entry in recorded:
        data = files[entry["path"]]
        assert (entry["size"], entry["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())


def test_a_stop_commits_the_chunk_in_flight_and_writes_nothing_ahead(
    jobs, outputs, rows_csv
) -> None:
    """Chunks read and parsed ahead are dropped: no part beyond the last checkpoint."""
    source = jobs.write(rows_csv(3000))
    stop = threading.Event()
    commits: list[int] = []

    def on_commit(cp: Checkpoint) -> None:
        commits.append(cp.chunk_index)
        if cp.chunk_index == 5:
            stop.set()

    job = jobs.job(source, chunk_bytes=CHUNK_BYTES)
    pipeline = Pipeline(job, WorkerMetrics("t", "j"), stop, on_commit)
    assert pipeline.run() is Outcome.STOPPED
    assert jobs.state().chunk_index == 5 and commits[-1] == 5
    written = sorted(p.name for p in (jobs.tmp / "sink").glob("part-*"))
    assert written == [f"part-{i:06d}.csv" for i in range(5)]

    assert jobs.run(jobs.job(source, chunk_bytes=CHUNK_BYTES)).checkpoint.done
    expected = outputs.expected(source.read_bytes())
    assert outputs.values(jobs.tmp / "sink", "csv", expected.header) == expected.rows


def test_an_error_ahead_surfaces_after_the_chunks_before_it_commit(jobs, rows_csv) -> None:
    """The source changing under a read-ahead fails the run at the next commit, in order."""
    source = jobs.write(rows_csv(3000))
    job = jobs.job(source, chunk_bytes=CHUNK_BYTES)

    def change_source(cp: Checkpoint) -> None:
        if cp.chunk_index == 3:
            source.write_bytes(source.read_bytes() + b"3000,late,row,00000\n")

    with pytest.raises(SourceChanged):
        Pipeline(job, WorkerMetrics("t", "j"), threading.Event(), change_source).run()
    state = jobs.state()
    assert state.chunk_index == 3 and "changed" in state.error


def test_zstd_is_chosen_through_the_sink_options(jobs, outputs, rows_csv) -> None:
    sink = {"url": "file:///out", "format": "parquet", "options": {"compression": "zstd"}}
    spec = CollectJobSpec.from_dict({"source": {"url": "file:///in.csv"}, "sink": sink})
    config = WorkerConfig.from_json(spec.worker_config().to_json())
    assert config.sink.options.compression == "zstd"
    with pytest.raises(ValueError, match=r"spec\.sink\.options\.compression"):
        CollectJobSpec.from_dict(
            {"source": sink, "sink": sink | {"options": {"compression": "lzo"}}}
        )
    data = rows_csv(500)
    job = dataclasses.replace(
        jobs.job(jobs.write(data), fmt="parquet"), sink_options=config.sink.options
    )
    jobs.run(job)
    part = pq.ParquetFile(jobs.tmp / "sink" / "part-000000.parquet")
    codecs = {part.metadata.row_group(0).column(i).compression for i in range(4)}
    assert codecs == {"ZSTD"}
    expected = outputs.expected(data)
    assert outputs.values(jobs.tmp / "sink", "parquet", expected.header) == expected.rows


@pytest.mark.parametrize("statistics", [True, False])
def test_parquet_statistics_are_written_unless_the_sink_options_turn_them_off(
    jobs, outputs, rows_csv, statistics
) -> None:
    sink = {"url": "file:///out", "format": "parquet", "options": {"statistics": statistics}}
    spec = CollectJobSpec.from_dict({"source": {"url": "file:///in.csv"}, "sink": sink})
    options = WorkerConfig.from_json(spec.worker_config().to_json()).sink.options
    assert (options.statistics, options.compression) == (statistics, "snappy")
    data = rows_csv(500)
    job = dataclasses.replace(jobs.job(jobs.write(data), fmt="parquet"), sink_options=options)
    jobs.run(job)
    group = pq.ParquetFile(jobs.tmp / "sink" / "part-000000.parquet").metadata.row_group(0)
    columns = [group.column(i) for i in range(group.num_columns)]
    assert all(column.is_stats_set == statistics for column in columns)
    expected = outputs.expected(data)
    assert outputs.values(jobs.tmp / "sink", "parquet", expected.header) == expected.rows
    if statistics:
        first = [row[0] for row in expected.rows]
        assert (columns[0].statistics.min, columns[0].statistics.max) == (min(first), max(first))


class _NotingCondition(threading.Condition):
    """Sets `waited` when a thread waits on it: here, when the encoder waits for room."""

    def __init__(self, waited: threading.Event) -> None:
        super().__init__()
        self.waited = waited

    def wait(self, timeout: float | None = None) -> bool:
        self.waited.set()
        return super().wait(timeout)


_RECORD = b"x" * 99 + b"\n"


def _records(offset: int, line: int, size: int) -> Iterator[Block]:
    """A chunk's blocks, one 100-byte record each."""
    for at in range(offset, offset + size, len(_RECORD)):
        yield Block(_RECORD, at, line + (at - offset) // len(_RECORD), 1)


def _parts_of_size(times: int) -> Callable[[Block], BlockOutput]:
    """A parse whose output is `times` its block's bytes, as a part's format may make it."""

    def parse(block: Block) -> BlockOutput:
        return BlockOutput(1, [], len(block.data), 0, raw=block.data * times)

    return parse


def test_a_part_waiting_to_be_committed_holds_back_the_next_one_beyond_two_chunks() -> None:
    """Parts three times their source (JSON Lines can be twice): while part 0 waits for its
    commit, part 1 may not make the two hold more than two chunks of source, so the encoder
    waits, holding the parsed block, until the commit. The chunks and their parts are the
    same as ever."""
    window = 1000
    parts: list[JsonlPart] = []

    def new_part() -> JsonlPart:
        parts.append(JsonlPart(pa.schema([])))
        return parts[-1]

    waited = threading.Event()
    chunks = PipelinedChunks(
        start=ChunkStart(0, 0, 1, window),
        size=3 * window,
        blocks=_records,
        parse=_parts_of_size(3),
        new_part=new_part,
        next_window=lambda current, seconds, end: window,
    )
    chunks._room = _NotingCondition(waited)  # white box: the only sign that the encoder waits
    with chunks:
        first = chunks.next()
        assert waited.wait(timeout=60), "the encoder never waited for room"
        assert len(parts) == 2 and parts[1].held_bytes == 0
        done = [first]
        chunks.committed(first)
        for _ in range(2):
            done.append(chunks.next())
            chunks.committed(done[-1])
    assert [(d.start, d.end, d.rows) for d in done] == [
        (0, 1000, 10),
        (1000, 2000, 10),
        (2000, 3000, 10),
    ]
    assert [sum(map(len, d.data)) for d in done] == [3 * window] * 3


def test_a_smaller_chunk_after_a_larger_one_is_encoded_while_the_larger_part_waits() -> None:
    """Near the end of a source chunks shrink (`tapered`). While the part of a 1000-byte chunk
    waits for its commit, the part of the 500-byte chunk after it is encoded whole: the two
    hold 1500 bytes, within two of the larger chunk's windows. (Two of the smaller one's,
    1000 bytes, would have kept the encoder and the parsers waiting for the commit.)"""
    either = threading.Event()
    """Set when the encoder waits for room, or when the second part is out."""
    chunks = PipelinedChunks(
        start=ChunkStart(0, 0, 1, 1000),
        size=1500,
        blocks=_records,
        parse=_parts_of_size(1),
        new_part=lambda: JsonlPart(pa.schema([])),
        next_window=lambda current, seconds, end: 500,
    )
    chunks._room = _NotingCondition(either)  # white box: the only sign that the encoder waits
    second: list[ChunkDone] = []

    def take_second() -> None:
        second.append(chunks.next())
        either.set()

    with chunks:
        first = chunks.next()
        taker = threading.Thread(target=take_second, daemon=True)
        taker.start()
        assert either.wait(timeout=60), "neither the second part nor a wait for room came"
        out_before_commit = bool(second)
        chunks.committed(first)  # lets an encoder that waited go on
        taker.join(timeout=60)
        assert out_before_commit, "the encoder waited for room beside the larger part"
        chunks.committed(second[0])
    assert [(d.start, d.end, sum(map(len, d.data))) for d in (first, *second)] == [
        (0, 1000, 1000),
        (1000, 1500, 500),
    ]


def test_parsers_run_at_a_lower_priority_than_the_encoder_and_the_committer() -> None:
    """The parsers yield the CPU to the critical path (stages.yield_to_the_critical_path)."""

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    seen: dict[str, int] = {}

    def blocks(offset: int, line: int, size: int) -> Iterator[Block]:
        yield Block(b"x\n", offset, line, 1)

    def parse(block: Block) -> BlockOutput:
        seen["parser"] = niceness()
        return BlockOutput(1, [], len(block.data), 0, raw=block.data)

    def new_part() -> JsonlPart:
        seen["encoder"] = niceness()
        return JsonlPart(pa.schema([]))

    with PipelinedChunks(
        start=ChunkStart(0, 0, 1, 2),
        size=2,
        blocks=blocks,
        parse=parse,
        new_part=new_part,
        next_window=lambda current, seconds, end: current,
    ) as chunks:
        chunks.committed(chunks.next())
    committer = niceness()
    assert seen["encoder"] == committer
    assert seen["parser"] == min(MAX_NICENESS, committer + PARSER_NICENESS)
