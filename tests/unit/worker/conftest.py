"""Fixtures for the worker's unit tests: building jobs, running them, and reading outputs back.

Expected values always come from Python's csv module reading the source, never from the
worker's own parser, so a test compares two independent readings of the same bytes.
"""

from __future__ import annotations

import csv
import http.server
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from collectjob_api.checkpoint import Checkpoint
from collectjob_api.contract import DEFAULT_MAX_RECORD_BYTES, ENV_URL_ALLOWLIST
from collectjob_worker.checkpoint_store import CheckpointStore, FileCheckpointStore
from collectjob_worker.dialect import Dialect
from collectjob_worker.metrics import WorkerMetrics
from collectjob_worker.pipeline import Job, Outcome, Pipeline
from collectjob_worker.processors import ProcessorRunner
from collectjob_worker.sinks import open_sink
from collectjob_worker.sources import Source, SourceStat, open_source
from collectjob_worker.transform import Transform
from localcluster.controlplane import free_port as find_free_port

Rows = list[list[str]]


@dataclass
class Expected:
    header: list[str]
    rows: Rows
    rejects: list[int] = field(default_factory=list)
    """Source line numbers of the records that must be rejected."""


def expected_from_source(
    data: bytes, delimiter: str = ",", quote: str = '"', encoding: str = "utf-8"
) -> Expected:
    """What a correct worker must output, read with Python's csv module."""
    text = data.decode(encoding, errors="surrogateescape").removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=quote)
    records: list[tuple[int, list[str]]] = []
    line = 1
    for record in reader:
        records.append((line, record))
        line = reader.line_num + 1
    if records and _unterminated(text, records[-1][0], delimiter, quote):
        records[-1] = (records[-1][0], ["<unterminated>"])
    if not records:
        return Expected([], [])
    header = records[0][1]
    expected = Expected(header, [])
    for line, record in records[1:]:
        if not record and len(header) > 1:
            continue
        record = record or [""]
        undecodable = any("\udc80" <= ch <= "\udcff" for value in record for ch in value)
        if len(record) == len(header) and not undecodable and record != ["<unterminated>"]:
            expected.rows.append(record)
        else:
            expected.rejects.append(line)
    return expected


def _unterminated(text: str, line: int, delimiter: str, quote: str) -> bool:
    """Whether the record starting at `line` runs into the end of the file inside quotes
    (the lenient reader swallows the rest of the file into its last field): a line ending and
    a sentinel put after it are then swallowed too, instead of starting a record of their own.
    (Not asked of a strict reader: it stops earlier, at a stray character after a closing
    quote, as in `""a,,"`, and never says that the record was left open; the fuzz test found
    that.)"""
    tail = "".join(io.StringIO(text, newline="").readlines()[line - 1 :])
    sentinel = next(c for c in "\x01\x02" if c not in (delimiter, quote))
    extended = csv.reader(
        io.StringIO(tail + "\n" + sentinel, newline=""), delimiter=delimiter, quotechar=quote
    )
    return list(extended)[-1] != [sentinel]


def read_parts(
    sink: Path, fmt: str, prefix: str = "part-"
) -> tuple[list[str], list[dict[str, Any]]]:
    """Column names and rows of every part, in part order, as the sink's format stores them."""
    names: list[str] = []
    rows: list[dict[str, Any]] = []
    for path in sorted(sink.glob(f"{prefix}*.{fmt}")):
        if fmt == "csv":
            records = list(csv.reader(io.StringIO(path.read_bytes().decode(), newline="")))
            names = records[0]
            rows += [dict(zip(names, r or [""], strict=True)) for r in records[1:]]
        elif fmt == "parquet":
            table = pq.read_table(path)
            names = table.column_names
            rows += table.to_pylist()
        else:
            rows += [json.loads(line) for line in path.read_text().splitlines()]
    return names, rows


class Outputs:
    """Reading a source with Python's csv module and a sink back, to compare them."""

    expected = staticmethod(expected_from_source)
    parts = staticmethod(read_parts)

    @staticmethod
    def values(sink: Path, fmt: str, header: list[str]) -> Rows:
        """The output as lists of values in header order, for comparing with the source."""
        _, rows = read_parts(sink, fmt)
        return [[row[name] for name in header] for row in rows]

    @staticmethod
    def rejects(sink: Path, fmt: str) -> list[dict[str, Any]]:
        return read_parts(sink / "rejects", fmt)[1]


@pytest.fixture
def outputs() -> type[Outputs]:
    return Outputs


@dataclass
class JobFactory:
    tmp: Path

    def write(self, data: bytes, name: str = "source.csv") -> Path:
        path = self.tmp / name
        path.write_bytes(data)
        return path

    def job(
        self,
        source: str | Path,
        *,
        fmt: str = "csv",
        chunk_bytes: int = 1 << 20,
        dialect: Dialect | None = None,
        transform: dict[str, Any] | None = None,
        store: CheckpointStore | None = None,
        sink: Path | None = None,
        holder: str = "test-worker",
        processor: ProcessorRunner | None = None,
        min_commit_seconds: float = 0.0,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> Job:
        """A job; commits are not coalesced unless asked, so small chunks stay small."""
        store = store or FileCheckpointStore(self.tmp / "state.json")
        return Job(
            source=open_source(str(source)),
            sink=open_sink(str(sink or self.tmp / "sink"), owner=store.owner_id()),
            sink_format=fmt,
            dialect=dialect or Dialect(),
            transform=Transform.from_dict(transform) if transform else None,
            store=store,
            holder=holder,
            chunk_bytes=chunk_bytes,
            processor=processor,
            min_commit_seconds=min_commit_seconds,
            max_record_bytes=max_record_bytes,
        )

    def pipeline(
        self, job: Job, on_commit: Callable[[Checkpoint], None] = lambda cp: None
    ) -> Pipeline:
        return Pipeline(job, WorkerMetrics("test", "job"), threading.Event(), on_commit)

    def run(self, job: Job) -> Pipeline:
        pipeline = self.pipeline(job)
        assert pipeline.run() is Outcome.DONE
        return pipeline

    def run_until(self, job: Job, chunks: int) -> Pipeline:
        """Run until `chunks` chunks are committed in this run, then stop as a signal would."""
        stop = threading.Event()
        first: list[int] = []

        def on_commit(cp: Checkpoint) -> None:
            first.append(cp.chunk_index)
            if cp.chunk_index - first[0] >= chunks:
                stop.set()

        pipeline = Pipeline(job, WorkerMetrics("test", "job"), stop, on_commit)
        assert pipeline.run() is Outcome.STOPPED
        return pipeline

    def state(self) -> Checkpoint:
        return FileCheckpointStore(self.tmp / "state.json").load().checkpoint


@pytest.fixture
def jobs(tmp_path: Path) -> JobFactory:
    return JobFactory(tmp_path)


@dataclass
class WorkerCli:
    """Runs the real `python -m collectjob_worker` in a subprocess."""

    cwd: Path

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "collectjob_worker", *args]

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            cwd=self.cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), cwd=self.cwd, capture_output=True, text=True, timeout=timeout
        )

    def run_killed(
        self, args: list[str], state: Path, rng: random.Random, kills: int, step: int
    ) -> tuple[int, str]:
        """Run `args` until a run completes by itself, SIGKILLing up to `kills` runs at a
        random moment after 1 to `step` more chunks were committed (mid-chunk, mid-write,
        mid-commit: wherever the worker happens to be). Returns the kills made and the
        completing run's stderr; that run must have exited 0."""
        made = 0
        while True:
            proc = self.start(*args)
            if made < kills:
                target = committed_chunks(state) + rng.randint(1, step)
                wait_for(
                    lambda proc=proc, target=target: (
                        proc.poll() is not None or committed_chunks(state) >= target
                    ),
                    60,
                    f"chunk {target} to be committed",
                )
                try:
                    proc.wait(timeout=rng.uniform(0, 0.03))
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    proc.communicate(timeout=30)
                    made += 1
                    continue
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            return made, err


def committed_chunks(state: Path) -> int:
    """The chunk index a local run's state file has committed, -1 before the first."""
    try:
        return int(json.loads(state.read_text())["chunk_index"])
    except (FileNotFoundError, ValueError):
        return -1


@pytest.fixture
def worker_cli(tmp_path: Path) -> WorkerCli:
    return WorkerCli(tmp_path)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        threading.Event().wait(0.01)


@pytest.fixture
def waiter() -> Callable[[Callable[[], bool], float, str], None]:
    return wait_for


class RecordingSource:
    """A source that remembers every byte range read from it."""

    def __init__(self, inner: Source) -> None:
        self.inner = inner
        self.url = inner.url
        self.block_bytes = inner.block_bytes
        self.rereads_cheaply = inner.rereads_cheaply
        self.reads: list[tuple[int, int]] = []

    def stat(self) -> SourceStat:
        return self.inner.stat()

    def read(self, offset: int, size: int) -> bytes:
        self.reads.append((offset, size))
        return self.inner.read(offset, size)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def recording() -> type[RecordingSource]:
    return RecordingSource


def make_rows_csv(rows: int, seed: int = 0) -> bytes:
    """A CSV with quoted delimiters, quotes, newlines and lossless traps in every few rows."""
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "name", "note", "code"])
    notes = ["plain", "a,b", 'say "hi"', "two\nlines", "", "  pad  ", "NA", "null", "é"]
    for i in range(rows):
        writer.writerow([i, f"name {rng.randrange(10**6)}", rng.choice(notes), f"{i % 1000:05d}"])
    return out.getvalue().encode()


@pytest.fixture
def rows_csv() -> Callable[..., bytes]:
    return make_rows_csv


@pytest.fixture
def free_port() -> int:
    return find_free_port()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def do_GET(self) -> None:
        self._respond(body=True)

    def _respond(self, body: bool) -> None:
        state = self.server
        state.requests.append((self.command, self.path, self.headers.get("Range")))
        if self.path != "/data.csv":
            self.send_error(404)
            return
        payload, start, end = state.payload, 0, len(state.payload)
        wanted = self.headers.get("Range")
        if state.ranges and wanted:
            first, last = wanted.removeprefix("bytes=").split("-")
            start, end = int(first), min(int(last) + 1, len(payload))
            if state.stall_from is not None and start >= state.stall_from:
                state.stalled.set()
                state.gate.wait(60)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(payload)}")
        else:
            self.send_response(200)
        if state.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if state.etag:
            self.send_header("ETag", state.etag)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if body:
            self.wfile.write(payload[start:end])


class FileServer(http.server.ThreadingHTTPServer):
    """Serves one CSV at /data.csv on loopback, with or without Range support."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payload = b""
        self.ranges = True
        self.etag = ""
        self.requests: list[tuple[str, str, str | None]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}/data.csv"
        self.stall_from: int | None = None
        """Range requests from this offset on hang until `gate` opens."""
        self.stalled = threading.Event()
        self.gate = threading.Event()


@pytest.fixture
def loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> str:
    """Test servers listen on loopback, which the URL policy refuses unless allowlisted."""
    monkeypatch.setenv(ENV_URL_ALLOWLIST, "127.0.0.1")
    return "127.0.0.1"


@pytest.fixture
def http_server(loopback_allowed: str) -> Iterator[FileServer]:
    server = FileServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.gate.set()
    server.shutdown()
    server.server_close()
    thread.join(10)


@dataclass
class S3:
    """A moto S3 server on loopback, with the AWS env pointing at it."""

    endpoint: str
    bucket: str

    def fs(self) -> Any:
        from collectjob_worker import s3

        return s3.filesystem()

    def download(self, prefix: str, target: Path) -> Path:
        fs = self.fs()
        for key in fs.find(f"{self.bucket}/{prefix}"):
            local = target / key.removeprefix(f"{self.bucket}/{prefix}/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(fs.cat_file(key))
        return target


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_store(moto_server: str, monkeypatch: pytest.MonkeyPatch, loopback_allowed: str) -> S3:
    import boto3

    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_server,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    bucket = f"bucket-{random.randrange(10**9)}"
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=bucket)
    return S3(moto_server, bucket)
