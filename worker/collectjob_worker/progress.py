"""Telling a person how far a local run is: a progress bar on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import time
from typing import TextIO

from collectjob_api.checkpoint import Checkpoint

log = logging.getLogger("collectjob_worker")
_BAR = 30


def describe(cp: Checkpoint) -> str:
    return (
        f"byte {cp.offset:,} of {cp.bytes_total:,} ({cp.progress_ratio:.1%}), "
        f"{cp.rows_processed:,} rows, {cp.rows_rejected:,} rejected"
    )


class ProgressReporter:
    def __init__(self, stream: TextIO, tty: bool) -> None:
        self.stream = stream
        self.tty = tty
        self._start_time = time.monotonic()
        self._start_offset: int | None = None
        self._chunk_index = -1

    def update(self, cp: Checkpoint) -> None:
        """Called after every commit; reports each newly committed chunk once."""
        if self._start_offset is None:
            self._start_offset, self._chunk_index = cp.offset, cp.chunk_index
            self._start_time = time.monotonic()
            return
        if cp.chunk_index == self._chunk_index:
            return
        self._chunk_index = cp.chunk_index
        if not self.tty:
            log.info("chunk %d committed: %s", cp.chunk_index - 1, describe(cp))
            return
        elapsed = max(time.monotonic() - self._start_time, 1e-6)
        rate = (cp.offset - self._start_offset) / elapsed
        left = (cp.bytes_total - cp.offset) / rate if rate > 0 else 0.0
        filled = int(_BAR * cp.progress_ratio)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (_BAR - filled)}] {cp.progress_ratio:6.1%} "
            f"{cp.rows_processed:,} rows  {rate / 1e6:.1f} MB/s  ETA {left:,.0f}s "
        )
        self.stream.flush()

    def retrying(self, reason: str, message: str) -> None:
        """Say that the job is waiting on a transient failure, on a line of its own."""
        self.end_line()
        log.warning("retrying (%s): %s", reason, message)

    def end_line(self) -> None:
        """Finish the bar's line so that the next message starts on a fresh one."""
        if self.tty and self._start_offset is not None:
            self.stream.write("\n")
            self.stream.flush()
