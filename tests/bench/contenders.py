"""One benchmark contender, run alone in a fresh interpreter so its peak RSS is its own.

    python tests/bench/contenders.py CONTENDER JOB SOURCE OUT [CHUNK_BYTES]

CONTENDER is worker, duckdb, polars or cp; JOB is csv, parquet, jsonl, typed (parquet with
the typed transform of TYPED_COLUMNS) or parquet-nostats (parquet without min/max statistics,
which the worker's sink options and polars can both turn off). Prints one JSON line:
`seconds` (the job alone, after imports), `cpu` (CPU seconds of the job, on every thread and
in `cp`'s process), `baseline_kib` (RSS after imports, before the job),
`peak_kib` (VmHWM, the process's peak RSS), `rows` written when the contender reports it, and
for the worker its `chunks` (= checkpoints committed) and `checkpoint_seconds` (time spent
committing them).

Every engine keeps every value a string (DuckDB `all_varchar`, polars `infer_schema=False`,
the worker without a transform), so all of them do the same lossless job; for `typed` the
peers cast the same four columns (TRY_CAST / strict=False) and check the pattern, which is
what the worker's transform does.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

TYPED_COLUMNS = [
    {"name": "id", "type": "integer", "required": True},
    {"name": "name"},
    {"name": "email"},
    {"name": "amount", "type": "number"},
    {"name": "date", "type": "datetime"},
    {"name": "comment"},
    {"name": "code", "pattern": "^[0-9]{5}$"},
]


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _cpu_seconds() -> float:
    """CPU time of this process's threads and of the children it waited for (`cp`)."""
    usages = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(usage.ru_utime + usage.ru_stime for usage in usages)


def _worker(job: str, source: str, out: str, chunk_bytes: int) -> dict[str, float]:
    from collectjob_api.contract import SinkOptions
    from collectjob_worker.checkpoint_store import FileCheckpointStore
    from collectjob_worker.dialect import Dialect
    from collectjob_worker.metrics import WorkerMetrics
    from collectjob_worker.pipeline import Job, Outcome, Pipeline
    from collectjob_worker.sinks import open_sink
    from collectjob_worker.sources import open_source
    from collectjob_worker.transform import Transform

    transform = Transform.from_dict({"columns": TYPED_COLUMNS}) if job == "typed" else None
    store = FileCheckpointStore(Path(out + ".state.json"))
    run = Job(
        source=open_source(source),
        sink=open_sink(out, owner=store.owner_id()),
        sink_format={"typed": "parquet", "parquet-nostats": "parquet"}.get(job, job),
        sink_options=SinkOptions(statistics=job != "parquet-nostats"),
        dialect=Dialect(),
        transform=transform,
        store=store,
        holder="bench",
        chunk_bytes=chunk_bytes,
    )
    pipeline = Pipeline(run, WorkerMetrics("bench", job), threading.Event())
    assert pipeline.run() is Outcome.DONE
    return {
        "rows": pipeline.checkpoint.rows_processed,
        "chunks": pipeline.checkpoint.chunk_index,
        "checkpoint_seconds": pipeline.metrics.checkpoint_seconds._sum.get(),
    }


def _duckdb(job: str, source: str, out: str) -> dict[str, float]:
    import duckdb

    read = f"read_csv('{source}', all_varchar=true, header=true)"
    select = f"SELECT * FROM {read}"
    if job == "typed":
        select = (
            "SELECT TRY_CAST(id AS BIGINT) AS id, name, email, TRY_CAST(amount AS DOUBLE) "
            "AS amount, TRY_CAST(date AS TIMESTAMPTZ) AS date, comment, code "
            f"FROM {read} WHERE regexp_full_match(code, '[0-9]{{5}}')"
        )
    fmt = {"csv": "csv", "parquet": "parquet", "typed": "parquet", "jsonl": "json"}[job]
    result = duckdb.sql(f"COPY ({select}) TO '{out}' (FORMAT {fmt})").fetchall()
    return {"rows": int(result[0][0])}


def _polars(job: str, source: str, out: str) -> dict[str, float]:
    import polars as pl

    frame = pl.scan_csv(source, infer_schema=False)
    if job == "typed":
        frame = frame.filter(pl.col("code").str.contains("^[0-9]{5}$")).with_columns(
            pl.col("id").cast(pl.Int64, strict=False),
            pl.col("amount").cast(pl.Float64, strict=False),
            pl.col("date").str.to_datetime(strict=False, time_zone="UTC"),
        )
    if job in ("parquet", "typed", "parquet-nostats"):
        frame.sink_parquet(out, statistics=job != "parquet-nostats")
    elif job == "csv":
        frame.sink_csv(out)
    else:
        frame.sink_ndjson(out)
    return {}


def _cp(source: str, out: str) -> dict[str, float]:
    subprocess.run(["cp", source, out], check=True)
    return {}


def main() -> None:
    contender, job, source, out = sys.argv[1:5]
    chunk_bytes = int(sys.argv[5]) if len(sys.argv) > 5 else 64 << 20
    if contender == "worker":
        # Imports are not the job: load what the worker loads lazily before the clock starts.
        for module in (
            "collectjob_worker.pipeline",
            "collectjob_worker.transform",
            "pyarrow.parquet",
            "pandas",
        ):
            __import__(module)
    elif contender in ("duckdb", "polars"):
        __import__(contender)
    baseline = _kib("VmRSS")
    start, cpu = time.perf_counter(), _cpu_seconds()
    if contender == "worker":
        extra = _worker(job, source, out, chunk_bytes)
    elif contender == "duckdb":
        extra = _duckdb(job, source, out)
    elif contender == "polars":
        extra = _polars(job, source, out)
    else:
        extra = _cp(source, out)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    peak = _kib("VmHWM")
    measured = {"seconds": seconds, "cpu": cpu, "baseline_kib": baseline, "peak_kib": peak}
    print(json.dumps(measured | extra))


if __name__ == "__main__":
    main()
