"""Remote sources and sinks against real servers on loopback: HTTP (with and without Range
support) and S3 (moto's server, reached through the standard AWS_ENDPOINT_URL env var)."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from collectjob_worker.checkpoint_store import FileCheckpointStore
from collectjob_worker.errors import PermanentError, SinkError, SourceChanged
from collectjob_worker.ownership import OWNER_MARKER
from collectjob_worker.pipeline import Job
from collectjob_worker.retry import Backoff
from collectjob_worker.sinks import SinkStore, open_sink
from collectjob_worker.sources import HttpSource


def _spy_job(jobs, recording, source_url, **kwargs):
    job = jobs.job(source_url, **kwargs)
    spy = recording(job.source)
    return dataclasses.replace(job, source=spy), spy


def test_http_resume_uses_range_requests(jobs, outputs, recording, rows_csv, http_server):
    data = rows_csv(2000, seed=1)
    http_server.payload, http_server.etag = data, '"v1"'
    stopped = jobs.run_until(jobs.job(http_server.url, chunk_bytes=4096), chunks=3)
    offset = stopped.checkpoint.offset
    assert stopped.checkpoint.fingerprint == 'etag="v1"'
    http_server.requests.clear()

    job, spy = _spy_job(jobs, recording, http_server.url, chunk_bytes=4096)
    jobs.run(job)
    assert min(start for start, _ in spy.reads) == offset
    ranges = [r for method, _, r in http_server.requests if method == "GET"]
    assert ranges and all(r is not None for r in ranges)
    assert int(ranges[0].removeprefix("bytes=").split("-")[0]) == offset
    expected = outputs.expected(data)
    assert outputs.values(jobs.tmp / "sink", "csv", expected.header) == expected.rows


def test_http_without_range_support_falls_back_with_a_warning(
    jobs, outputs, rows_csv, http_server, caplog
) -> None:
    data = rows_csv(1500, seed=2)
    http_server.payload, http_server.ranges = data, False
    jobs.run_until(jobs.job(http_server.url, chunk_bytes=4096), chunks=2)
    with caplog.at_level(logging.WARNING):
        jobs.run(jobs.job(http_server.url, chunk_bytes=4096))
    assert "ignores Range requests" in caplog.text
    expected = outputs.expected(data)
    assert outputs.values(jobs.tmp / "sink", "csv", expected.header) == expected.rows


def test_http_source_changed_is_detected_by_etag(jobs, rows_csv, http_server) -> None:
    http_server.payload, http_server.etag = rows_csv(1000), '"v1"'
    jobs.run_until(jobs.job(http_server.url, chunk_bytes=2048), chunks=1)
    http_server.etag = '"v2"'
    with pytest.raises(SourceChanged, match='etag="v1" -> etag="v2"'):
        jobs.pipeline(jobs.job(http_server.url, chunk_bytes=2048)).run()


def test_http_missing_source_is_permanent(http_server) -> None:
    source = HttpSource(http_server.url.replace("data.csv", "nope.csv"), Backoff(deadline=1))
    with pytest.raises(PermanentError, match="HTTP 404"):
        source.stat()


def test_s3_source_and_resume(jobs, outputs, recording, rows_csv, s3_store) -> None:
    data = rows_csv(2000, seed=4)
    url = f"s3://{s3_store.bucket}/in/data.csv"
    s3_store.fs().pipe_file(url.removeprefix("s3://"), data)
    stopped = jobs.run_until(jobs.job(url, chunk_bytes=4096), chunks=2)
    assert stopped.checkpoint.fingerprint.startswith("etag=")

    job, spy = _spy_job(jobs, recording, url, chunk_bytes=4096)
    jobs.run(job)
    assert min(start for start, _ in spy.reads) == stopped.checkpoint.offset
    expected = outputs.expected(data)
    assert outputs.values(jobs.tmp / "sink", "csv", expected.header) == expected.rows


def test_s3_source_replaced_is_detected(jobs, rows_csv, s3_store) -> None:
    data = rows_csv(1000)
    url = f"s3://{s3_store.bucket}/in/data.csv"
    s3_store.fs().pipe_file(url.removeprefix("s3://"), data)
    jobs.run_until(jobs.job(url, chunk_bytes=2048), chunks=1)
    s3_store.fs().pipe_file(url.removeprefix("s3://"), data + b"1000,x,y,z\n")
    with pytest.raises(SourceChanged, match="changed since the checkpoint"):
        jobs.pipeline(jobs.job(url)).run()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_s3_sink(jobs, outputs, rows_csv, s3_store, tmp_path, fmt: str) -> None:
    data = rows_csv(1200, seed=6)
    prefix = f"out-{fmt}"
    job = jobs.job(jobs.write(data), fmt=fmt, chunk_bytes=8192)
    job = dataclasses.replace(job, sink=_sink(job, f"s3://{s3_store.bucket}/{prefix}"))
    jobs.run(job)

    local = s3_store.download(prefix, tmp_path / "downloaded")
    expected = outputs.expected(data)
    assert outputs.values(local, fmt, expected.header) == expected.rows
    manifest = json.loads((local / "_manifest.json").read_text())
    names = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    parts = [c["part"]["path"] for c in manifest["chunks"]]
    assert names == sorted(["_SUCCESS", "_manifest.json", OWNER_MARKER, *parts])


def test_s3_sink_that_cannot_be_written_commits_nothing(jobs, rows_csv, s3_store) -> None:
    data = rows_csv(300)
    job = jobs.job(jobs.write(data), store=FileCheckpointStore(jobs.tmp / "state.json"))
    job = dataclasses.replace(job, sink=_sink(job, "s3://no-such-bucket-here/out"))
    with pytest.raises(SinkError, match=r"cannot \w+ s3://no-such-bucket-here/out.*bucket"):
        jobs.pipeline(job).run()
    state = jobs.state()
    assert state.chunk_index == 0 and state.rows_processed == 0


def _sink(job: Job, url: str) -> SinkStore:
    return open_sink(url, owner=job.store.owner_id(), backoff=Backoff(deadline=2))


class _Misbehaving(http.server.BaseHTTPRequestHandler):
    """Answers every ranged GET with 206 and whatever `server.mode` says is wrong with it."""

    server: MisbehavingServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", self.server.head_length)
        self.end_headers()

    def do_GET(self) -> None:
        first, last = map(int, self.headers["Range"].removeprefix("bytes=").split("-"))
        mode, total = self.server.mode, MisbehavingServer.SIZE
        self.send_response(206)
        if mode == "shifted":
            self.send_header("Content-Range", f"bytes {first + 1}-{last + 1}/{total}")
        elif mode == "wider":
            self.send_header("Content-Range", f"bytes {first}-{last + 1000}/{total}")
        elif mode == "resized":
            self.send_header("Content-Range", f"bytes {first}-{last}/{total + 1}")
        else:
            self.send_header("Content-Range", f"bytes {first}-{last}/{total}")
        if mode == "endless":
            self.send_header("Connection", "close")
        self.end_headers()
        if mode != "endless":
            self.wfile.write(b"x" * (last - first + 1))
            return
        # far more than asked, without a Content-Length: only a bounded read survives this
        with contextlib.suppress(OSError):
            for _ in range(self.server.endless_mib):
                self.wfile.write(b"y" * (1 << 20))
                self.server.sent_mib += 1


class MisbehavingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    SIZE = 1 << 30

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Misbehaving)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/data.csv"
        self.mode = "endless"
        self.head_length = str(self.SIZE)
        self.endless_mib = 256
        self.sent_mib = 0


@pytest.fixture
def misbehaving(loopback_allowed: str) -> Iterator[MisbehavingServer]:
    server = MisbehavingServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(30)


def test_a_server_sending_more_than_asked_is_refused_after_one_extra_byte(misbehaving) -> None:
    source = HttpSource(misbehaving.url, Backoff(deadline=1))
    source.stat()
    with pytest.raises(PermanentError, match="sent more than the 4096 bytes it announced"):
        source.read(0, 4096)
    assert misbehaving.sent_mib < misbehaving.endless_mib


@pytest.mark.parametrize(
    ("mode", "error", "match"),
    [
        ("shifted", PermanentError, r"answered the range 0-4095 with Content-Range 'bytes 1-4096/"),
        ("wider", PermanentError, r"answered the range 0-4095 with Content-Range 'bytes 0-5095/"),
        ("resized", SourceChanged, r"size was 1073741824, Content-Range says 1073741825"),
    ],
)
def test_a_content_range_other_than_the_asked_range_is_refused(
    misbehaving, mode: str, error: type[Exception], match: str
) -> None:
    misbehaving.mode = mode
    source = HttpSource(misbehaving.url, Backoff(deadline=1))
    source.stat()
    with pytest.raises(error, match=match):
        source.read(0, 4096)


def test_a_content_length_that_is_not_a_size_is_refused(misbehaving) -> None:
    misbehaving.head_length = "12abc"
    with pytest.raises(PermanentError, match="Content-Length '12abc' is not a size"):
        HttpSource(misbehaving.url, Backoff(deadline=1)).stat()
