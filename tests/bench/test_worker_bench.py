"""Worker benchmark (`make bench`): against DuckDB and polars, and against pandas; resume cost,
checkpoint overhead, peak memory.

On a generated CSV of 2 million rows and 7 columns with quoted fields (quoted delimiters,
doubled quotes and embedded newlines), cached under .bench/, all in one run:

- naive pandas: `read_csv` in chunks -> `to_csv` (pandas' defaults: it also loses `007`);
- the practical limit: pandas reads everything as strings, pyarrow writes the CSV;
- this worker in local mode, csv -> csv, committing a checkpoint to a state file after
  every chunk, and for information csv -> parquet (which parses every value);
- time to first row when resuming at 10% and at 90% of the file;
- checkpoint overhead: the time spent committing checkpoints, as a share of the run, and the
  same run with checkpoints that cost nothing, for comparison;
- the peers (`test_worker_against_duckdb_and_polars`): csv->csv, csv->parquet, csv->jsonl
  and csv->parquet with a typed transform of 4 columns, by the worker, DuckDB (`COPY ... TO`)
  and polars (`scan_csv().sink_*`), every value kept as a string by all, each contender in its
  own interpreter (tests/bench/contenders.py) so its peak RSS is its own; `cp` is the floor.
  For information, csv->parquet without min/max statistics, by the worker
  (`sink.options.statistics: false`) and polars (`statistics=False`). The contenders take
  turns, REPEATS rounds, and the medians are compared: ratios from one run. Each contender's
  CPU seconds (all its threads) are printed beside its time: on a machine that is shared,
  they tell how much work each did;
- for information, csv->parquet by the worker and polars on the source's rows SCALE times
  over (about 1 GB; `test_worker_against_polars_at_scale`), where fixed costs weigh less.

`BENCH_ROWS` sets a smaller row count for a quick try (e.g. `BENCH_ROWS=200000 make bench`),
`BENCH_REPEATS` the number of rounds.

Each timing is the best of a few runs (the machine is shared). Targets are printed as
pass/miss; nothing here asserts a timing, only that every run produced the right row count.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from bench.rows import HEADER, row
from collectjob_api.checkpoint import Checkpoint
from collectjob_worker.checkpoint_store import CheckpointStore, FileCheckpointStore, Stored
from collectjob_worker.dialect import Dialect
from collectjob_worker.metrics import WorkerMetrics
from collectjob_worker.pipeline import Job, Outcome, Pipeline
from collectjob_worker.sinks import open_sink
from collectjob_worker.sources import open_source
from localcluster.paths import REPO_ROOT as ROOT

BENCH = ROOT / ".bench"
ROWS = int(os.environ.get("BENCH_ROWS", "2000000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
RESUME_REPEATS = 5


def _generate(path: Path) -> None:
    rng = random.Random(1)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        for i in range(ROWS):
            writer.writerow(row(i, rng))
    tmp.rename(path)


@pytest.fixture(scope="module")
def source() -> Iterator[Path]:
    """The cached source; the outputs written next to it are removed afterwards."""
    BENCH.mkdir(exist_ok=True)
    path = BENCH / f"worker-{ROWS}.csv"
    if not path.exists():
        _generate(path)
    path.read_bytes()  # warm the page cache so that every contender starts equal
    yield path
    outputs = ("worker-out-*", "worker-state-*", "peer-out-*", "worker-naive.csv")
    for pattern in (*outputs, "worker-practical.csv"):
        for output in BENCH.glob(pattern):
            _fresh(output)


class FreeStore:
    """Checkpoints kept in memory: the worker's run without any checkpoint cost."""

    description = "memory"

    def __init__(self) -> None:
        self.stored = Stored(Checkpoint(), "")

    def owner_id(self) -> str:
        return "bench-free"

    def load(self) -> Stored:
        return self.stored

    def save(self, checkpoint: Checkpoint, version: str) -> str:
        self.stored = Stored(checkpoint, str(int(version or 0) + 1))
        return self.stored.version


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.unlink(missing_ok=True)
    return path


def _job(
    source: Path,
    name: str,
    fmt: str = "csv",
    store: CheckpointStore | None = None,
    chunk_bytes: int = 64 << 20,
) -> Job:
    sink = _fresh(BENCH / f"worker-out-{name}")
    state = _fresh(BENCH / f"worker-state-{name}.json")
    store = store or FileCheckpointStore(state)
    return Job(
        source=open_source(str(source)),
        sink=open_sink(str(sink), owner=store.owner_id()),
        sink_format=fmt,
        dialect=Dialect(),
        transform=None,
        store=store,
        holder="bench",
        chunk_bytes=chunk_bytes,
    )


def _best(run: Callable[[], float]) -> float:
    return min(run() for _ in range(REPEATS))


def _written_off(out: Path) -> None:
    """Remove an output once measured, before the kernel writes it back: its ~190 MB of dirty
    pages, written back during a later measurement, would compete with that for the disk,
    most with a contender that syncs its output, as the scaled file's did (`_scaled`)."""
    _fresh(out)


def _naive_pandas(source: Path) -> float:
    out = _fresh(BENCH / "worker-naive.csv")
    start = time.perf_counter()
    rows = 0
    for i, frame in enumerate(pd.read_csv(source, chunksize=250_000)):
        frame.to_csv(out, mode="a", header=i == 0, index=False)
        rows += len(frame)
    elapsed = time.perf_counter() - start
    _written_off(out)
    assert rows == ROWS
    return elapsed


def _practical_limit(source: Path) -> float:
    out = _fresh(BENCH / "worker-practical.csv")
    start = time.perf_counter()
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), out)
    elapsed = time.perf_counter() - start
    _written_off(out)
    assert len(frame) == ROWS
    return elapsed


class WorkerRun:
    def __init__(
        self,
        source: Path,
        name: str,
        fmt: str = "csv",
        free: bool = False,
        chunk_bytes: int = 64 << 20,
    ) -> None:
        self.source, self.name, self.fmt, self.free = source, name, fmt, free
        self.chunk_bytes = chunk_bytes
        self.checkpoint_seconds = 0.0
        self.chunks = 0

    def __call__(self) -> float:
        store = FreeStore() if self.free else None
        job = _job(self.source, self.name, self.fmt, store, self.chunk_bytes)
        pipeline = Pipeline(job, WorkerMetrics("bench", self.name), threading.Event())
        start = time.perf_counter()
        assert pipeline.run() is Outcome.DONE
        elapsed = time.perf_counter() - start
        assert pipeline.checkpoint.rows_processed == ROWS
        self.checkpoint_seconds = pipeline.metrics.checkpoint_seconds._sum.get()
        self.chunks = pipeline.checkpoint.chunk_index
        return elapsed


def _first_row_seconds(source: Path, fraction: float) -> tuple[float, int]:
    """Median time from `run()` (loading the checkpoint) to the first parsed rows, resuming
    at `fraction` of the file, with the real state file and its acquisition commit.

    Chunks are not coalesced above 8 MiB (`min_commit_seconds=0`): a coalesced chunk (up to
    64 MiB, a third of the file) could cross 90% and end at the end of the file, leaving
    nothing to resume (the run was then done, not stopped, and the bench failed)."""
    size = source.stat().st_size
    job = dataclasses.replace(
        _job(source, f"resume-{fraction:.0%}", chunk_bytes=8 << 20), min_commit_seconds=0
    )
    stop = threading.Event()

    def stop_past(cp: Checkpoint) -> None:
        if cp.offset >= fraction * size:
            stop.set()

    assert Pipeline(job, WorkerMetrics("bench", "r"), stop, stop_past).run() is Outcome.STOPPED
    state = job.store.load().checkpoint
    samples = []
    for i in range(RESUME_REPEATS):
        path = BENCH / f"worker-state-resume-{fraction:.0%}-{i}.json"
        path.write_text(state.to_json())
        resume_stop = threading.Event()

        def after_one_chunk(cp: Checkpoint, stop: threading.Event = resume_stop) -> None:
            if cp.chunk_index > state.chunk_index:
                stop.set()

        resumed = Pipeline(
            dataclasses.replace(job, store=FileCheckpointStore(path)),
            WorkerMetrics("bench", "r"),
            resume_stop,
            after_one_chunk,
        )
        assert resumed.run() is Outcome.STOPPED
        assert resumed.first_row_seconds is not None
        samples.append(resumed.first_row_seconds)
    return statistics.median(samples), state.offset


def _mark(ok: bool) -> str:
    return "pass" if ok else "MISS"


def test_worker_benchmark(source: Path) -> None:
    size_mb = source.stat().st_size / 1e6
    naive = _best(lambda: _naive_pandas(source))
    practical = _best(lambda: _practical_limit(source))
    worker = WorkerRun(source, "worker")
    worker_seconds = _best(worker)
    free_seconds = _best(WorkerRun(source, "free", free=True))
    parquet_seconds = _best(WorkerRun(source, "parquet", fmt="parquet"))
    small = WorkerRun(source, "small-chunks", chunk_bytes=4 << 20)
    small_seconds = _best(small)
    first_10, offset_10 = _first_row_seconds(source, 0.10)
    first_90, offset_90 = _first_row_seconds(source, 0.90)
    overhead = worker.checkpoint_seconds / worker_seconds
    overhead_ab = (worker_seconds - free_seconds) / free_seconds

    print()
    print(f"source: {source} ({ROWS:,} rows x 7 columns, {size_mb:.0f} MB, quoted fields)")
    print(f"{'contender':<44}{'seconds':>9}{'MB/s':>9}")
    for label, seconds in [
        ("naive pandas (read_csv chunks -> to_csv)", naive),
        ("practical limit (pandas read, pyarrow write)", practical),
        (f"worker csv->csv, {worker.chunks} checkpoints", worker_seconds),
        ("worker csv->csv, checkpoints free", free_seconds),
        ("worker csv->parquet (info)", parquet_seconds),
        (f"worker csv->csv, 4 MiB chunks, {small.chunks} checkpoints", small_seconds),
    ]:
        print(f"{label:<44}{seconds:>9.2f}{size_mb / seconds:>9.0f}")
    print()
    for label, ratio, target in [
        ("worker vs practical limit", practical / worker_seconds, 0.9),
        ("worker vs naive pandas", naive / worker_seconds, 4.0),
    ]:
        print(f"{label:<44}{ratio:>8.2f}x  target >= {target}x {_mark(ratio >= target)}")
    print(
        f"{'first row, resume at 10% (byte ' + f'{offset_10:,})':<44}{first_10 * 1e3:>8.1f}ms"
        f"  target <= 50 ms {_mark(first_10 <= 0.05)}"
    )
    print(
        f"{'first row, resume at 90% (byte ' + f'{offset_90:,})':<44}{first_90 * 1e3:>8.1f}ms"
        f"  target <= 50 ms {_mark(first_90 <= 0.05)}"
    )
    print(f"{'resume 90% / resume 10%':<44}{first_90 / first_10:>8.2f}x  (flat: ~1x)")
    print(
        f"{'checkpoint overhead (commit time / run)':<44}{overhead:>8.2%}"
        f"  target <= 3%  {_mark(overhead <= 0.03)}"
    )
    print(f"{'checkpoint overhead (vs free checkpoints)':<44}{overhead_ab:>8.2%}  (noisy A/B)")
    small_overhead = small.checkpoint_seconds / small_seconds
    print(f"{'checkpoint overhead, 4 MiB chunks':<44}{small_overhead:>8.2%}  (info)")


CONTENDERS = Path(__file__).with_name("contenders.py")
PEER_JOBS = {
    "csv": ("duckdb", "polars"),
    "parquet": ("duckdb", "polars"),
    "jsonl": ("duckdb", "polars"),
    "typed": ("duckdb", "polars"),
    "parquet-nostats": ("polars",),
}
CHUNK_BYTES = 64 << 20


def _contender(name: str, job: str, source: Path, rows: int = ROWS) -> dict[str, float]:
    out = _fresh(BENCH / f"peer-out-{name}-{job}")
    _fresh(BENCH / f"peer-out-{name}-{job}.state.json")
    command = [sys.executable, str(CONTENDERS), name, job, str(source), str(out), str(CHUNK_BYTES)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{name} {job}: {result.stderr[-2000:]}"
    measured: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    if "rows" in measured:
        assert measured["rows"] == rows, f"{name} {job} wrote {measured['rows']} rows, not {rows}"
    _fresh(out)
    return measured


def _spread(runs: dict[tuple[str, str], list[dict[str, float]]], job: str, peer: str) -> str:
    """The lowest and highest worker/peer ratio of a single round (the two ran one after the
    other), to tell a ratio's distance from its target from the machine's noise."""
    pairs = zip(runs[(peer, job)], runs[("worker", job)], strict=True)
    ratios = [them["seconds"] / us["seconds"] for them, us in pairs]
    return f"{min(ratios):.2f}-{max(ratios):.2f}x"


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


@pytest.mark.timeout(3600)  # 13 contenders x REPEATS rounds on a shared machine
def test_worker_against_duckdb_and_polars(source: Path) -> None:
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    plan = [("cp", "csv")] + [
        (name, job) for job, peers in PEER_JOBS.items() for name in ("worker", *peers)
    ]
    for _ in range(REPEATS):
        for name, job in plan:
            runs.setdefault((name, job), []).append(_contender(name, job, source))
    seconds = {key: _median(value, "seconds") for key, value in runs.items()}
    cpu = {key: _median(value, "cpu") for key, value in runs.items()}
    peak = {key: max(run["peak_kib"] for run in value) / 1024 for key, value in runs.items()}
    size_mb = source.stat().st_size / 1e6

    print()
    print(
        f"source: {source.name} ({ROWS:,} rows x 7 columns, {size_mb:.0f} MB), "
        f"medians of {REPEATS} interleaved rounds, one run; chunkBytes {CHUNK_BYTES >> 20} MiB"
    )
    print(
        f"{'job':<16}{'contender':<9}{'seconds':>9}{'CPU s':>7}{'MB/s':>8}{'peak RSS MiB':>14}"
        f"{'worker/it':>11}"
    )
    for job, peers in PEER_JOBS.items():
        worker = seconds[("worker", job)]
        for name in ("worker", *peers):
            took = seconds[(name, job)]
            versus = "" if name == "worker" else f"{took / worker:>10.2f}x"
            print(
                f"{job:<16}{name:<9}{took:>9.2f}{cpu[(name, job)]:>7.2f}{size_mb / took:>8.0f}"
                f"{peak[(name, job)]:>14.0f}{versus:>11}"
            )
    floor = seconds[("cp", "csv")]
    print(
        f"{'csv':<16}{'cp':<9}{floor:>9.2f}{cpu[('cp', 'csv')]:>7.2f}{size_mb / floor:>8.0f}"
        f"{peak[('cp', 'csv')]:>14.0f}"
    )
    print()
    targets = [
        ("csv->parquet worker/polars", "parquet", "polars", 1.0),
        ("csv->parquet worker/DuckDB", "parquet", "duckdb", 1.0),
        ("csv->csv worker/DuckDB", "csv", "duckdb", 1.5),
        ("csv->jsonl worker/DuckDB", "jsonl", "duckdb", 1.0),
    ]
    for label, job, peer, target in targets:
        ratio = seconds[(peer, job)] / seconds[("worker", job)]
        print(
            f"{label:<44}{ratio:>8.2f}x  target >= {target}x {_mark(ratio >= target)}"
            f"  (rounds {_spread(runs, job, peer)})"
        )
    nostats = seconds[("polars", "parquet-nostats")] / seconds[("worker", "parquet-nostats")]
    print(
        f"{'csv->parquet, no statistics, worker/polars':<44}{nostats:>8.2f}x  (info)"
        f"  (rounds {_spread(runs, 'parquet-nostats', 'polars')})"
    )
    typed = seconds[("worker", "typed")] / seconds[("worker", "parquet")]
    print(
        f"{'typed / untyped parquet (worker)':<44}{typed:>8.2f}x"
        f"  target <= 1.3x {_mark(typed <= 1.3)}"
    )
    for job in PEER_JOBS:
        run = runs[("worker", job)][0]
        interval = _median(runs[("worker", job)], "seconds") / max(run["chunks"], 1)
        overhead = statistics.median(
            r["checkpoint_seconds"] / r["seconds"] for r in runs[("worker", job)]
        )
        print(
            f"{'worker ' + job + ': seconds per checkpoint':<44}{interval:>8.2f}s"
            f"  target <= 1 s {_mark(interval <= 1.0)}; commit time {overhead:.2%} of the run"
            f" {_mark(overhead <= 0.03)}"
        )
    baseline = max(r["baseline_kib"] for job in PEER_JOBS for r in runs[("worker", job)]) / 1024
    bound = 3 * CHUNK_BYTES / 2**20 + baseline
    worst = max(peak[("worker", job)] for job in PEER_JOBS)
    print(
        f"{'worker peak RSS (worst job)':<44}{worst:>8.0f} MiB"
        f"  target <= 3 x chunkBytes + baseline = {bound:.0f} MiB {_mark(worst <= bound)}"
    )


SCALE = 5


def _scaled(source: Path) -> Path:
    """The source's rows SCALE times over, under one header (about 1 GB from the default
    file), in the page cache like the source: it was just written there. It is synced before
    it is used, so that its writeback does not compete with the measured runs for the disk:
    the worker fsyncs every part it writes (worker/polars 1.07 and 1.11 without, 1.12 and
    1.11 with; the worker's median 3.05 and 2.99 s without, 2.85 and 2.87 s with)."""
    path = BENCH / f"worker-{ROWS}-x{SCALE}.csv"
    tmp = _fresh(path.with_suffix(".tmp"))
    with source.open("rb") as original, tmp.open("wb") as out:
        header = original.readline()
        out.write(header)
        for _ in range(SCALE):
            original.seek(len(header))
            shutil.copyfileobj(original, out, 16 << 20)
        out.flush()
        os.fsync(out.fileno())
    tmp.rename(path)
    return path


@pytest.mark.timeout(1800)
def test_worker_against_polars_at_scale(source: Path) -> None:
    """For information: csv->parquet against polars on SCALE times the rows, the size of the
    long imports the worker is for. On the bench file both keep every core busy and the
    worker's fixed costs weigh (the first touch of its memory, the last part encoded after the
    parsers are done); on a longer file its per-byte rate shows."""
    scaled = _scaled(source)
    try:
        runs: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(REPEATS):
            for name in ("worker", "polars"):
                measured = _contender(name, "parquet", scaled, rows=SCALE * ROWS)
                runs.setdefault((name, "parquet"), []).append(measured)
    finally:
        scaled.unlink()
    worker, polars = runs[("worker", "parquet")], runs[("polars", "parquet")]
    ratio = _median(polars, "seconds") / _median(worker, "seconds")
    print()
    print(
        f"csv->parquet x{SCALE} ({SCALE * ROWS:,} rows, {SCALE}x the source), medians of "
        f"{REPEATS} interleaved rounds: worker {_median(worker, 'seconds'):.2f} s "
        f"({_median(worker, 'cpu'):.2f} CPU s), polars {_median(polars, 'seconds'):.2f} s "
        f"({_median(polars, 'cpu'):.2f} CPU s)"
    )
    print(
        f"{'csv->parquet x' + str(SCALE) + ' worker/polars':<44}{ratio:>8.2f}x  (info)"
        f"  (rounds {_spread(runs, 'parquet', 'polars')})"
    )
