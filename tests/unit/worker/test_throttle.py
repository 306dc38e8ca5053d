"""The throttle keeps the average rate and never delays a stop."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from collectjob_worker.metrics import WorkerMetrics
from collectjob_worker.pipeline import Outcome, Pipeline
from collectjob_worker.throttle import SMALLEST_CHUNK_BYTES, Throttle


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_delay_keeps_the_average_rate():
    clock = FakeClock()
    throttle = Throttle(1000, clock)
    assert throttle.delay(500) == pytest.approx(0.5)
    clock.now += 0.5
    assert throttle.delay(500) == pytest.approx(0.5)
    clock.now += 3.0  # slow reads earn no credit beyond the average
    assert throttle.delay(1000) == 0.0


def test_chunks_are_one_second_of_throttled_bytes_but_never_tiny():
    assert Throttle(1 << 20).chunk_limit(64 << 20) == 1 << 20
    assert Throttle(1 << 30).chunk_limit(1 << 20) == 1 << 20  # chunkBytes still bounds it
    # A slow job commits once per SMALLEST_CHUNK_BYTES, not once a second.
    assert Throttle(1024).chunk_limit(64 << 20) == SMALLEST_CHUNK_BYTES == 64 << 10
    assert Throttle(1024).chunk_limit(4096) == 4096


def test_zero_means_unthrottled_and_negative_is_refused():
    assert Throttle.of(0) is None
    with pytest.raises(ValueError, match="positive byte rate"):
        Throttle(-1)


def test_a_stop_ends_the_wait_at_once():
    throttle, stop = Throttle(1024), threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    throttle.pace(1024 * 60, stop)  # would wait a minute
    assert time.monotonic() - started < 5


RATE = SMALLEST_CHUNK_BYTES
"""The lowest rate whose chunks are still one second of bytes."""


def test_a_throttled_pipeline_keeps_the_rate_and_stops_after_its_chunk(jobs, rows_csv):
    """Chunks are one second of throttled bytes, the run keeps to the rate, and a stop that
    arrives while the pipeline is pacing ends it after the committed chunk."""
    data = rows_csv(30_000)
    assert len(data) > 10 * RATE, len(data)
    job = dataclasses.replace(jobs.job(jobs.write(data)), throttle=Throttle(RATE))
    commits, stop = [], threading.Event()

    def on_commit(cp):
        commits.append((time.monotonic(), cp))
        if cp.chunk_index == 3:  # the stop lands during the pacing wait after chunk 3
            threading.Timer(0.1, stop.set).start()

    assert Pipeline(job, WorkerMetrics("test", "job"), stop, on_commit).run() is Outcome.STOPPED
    (first_at, first), last = commits[0], commits[-1][1]
    assert last.chunk_index == 3 and 0 < last.offset < len(data)
    assert all(cp.next_chunk_bytes <= RATE for _, cp in commits)
    # Chunk 2 was read only after chunk 1's bytes had taken their second (unthrottled, the
    # two chunks take milliseconds).
    chunk_1 = commits[1][1].offset - first.offset
    assert commits[2][0] - first_at >= chunk_1 / RATE - 0.2


def test_a_slow_job_commits_once_per_smallest_chunk(jobs, rows_csv):
    """At 1 KiB/s the first chunk still holds up to 64 KiB (record-aligned), and the next
    one waits for the pacing: one checkpoint write per 64 KiB, not one a second."""
    data = rows_csv(30_000)
    job = dataclasses.replace(jobs.job(jobs.write(data)), throttle=Throttle(1024))
    commits, stop = [], threading.Event()

    def on_commit(cp):
        commits.append(cp)
        if cp.chunk_index == 1:
            stop.set()  # lands during the pacing wait after the first chunk, about a minute

    started = time.monotonic()
    assert Pipeline(job, WorkerMetrics("test", "job"), stop, on_commit).run() is Outcome.STOPPED
    assert time.monotonic() - started < 30  # the stop ended the minute-long wait
    taken_over, cp = commits
    assert cp.chunk_index == 1 and taken_over.offset == cp.header_end
    assert SMALLEST_CHUNK_BYTES - 200 < cp.offset - cp.header_end <= SMALLEST_CHUNK_BYTES
    assert cp.next_chunk_bytes == SMALLEST_CHUNK_BYTES
