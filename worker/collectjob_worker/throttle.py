"""spec.throttle.bytesPerSecond: pace the worker's reads so a source or sink is not overloaded.

The pacing happens between chunks, after a chunk has committed, and waits on the stop event:
a stop request ends the wait at once, so throttling never eats into the stop budget (the
pod's grace period). Chunks are capped at about one second of throttled bytes, so progress
and checkpoints keep moving every second or so even at a low rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

MIN_CHUNK_BYTES = 1024
"""The CRD's lower bound on bytesPerSecond and on chunkBytes."""


class Throttle:
    """A running average limit: after N bytes since the start, at least N / rate seconds
    have passed. Bytes of this run only: a resumed job is paced from its restart."""

    def __init__(self, bytes_per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        if bytes_per_second <= 0:
            raise ValueError(f"throttle must be a positive byte rate, got {bytes_per_second}")
        self.rate = bytes_per_second
        self._clock = clock
        self._start = clock()
        self._bytes = 0

    @classmethod
    def of(cls, bytes_per_second: int) -> Throttle | None:
        """None for 0: unthrottled."""
        return cls(bytes_per_second) if bytes_per_second > 0 else None

    def chunk_limit(self, chunk_bytes: int) -> int:
        """The chunk bound under this throttle: about one second of reading."""
        return max(MIN_CHUNK_BYTES, min(chunk_bytes, self.rate))

    def delay(self, nbytes: int) -> float:
        """Count `nbytes` as read; the seconds to wait before reading more."""
        self._bytes += nbytes
        return max(0.0, self._start + self._bytes / self.rate - self._clock())

    def pace(self, nbytes: int, stop: threading.Event) -> None:
        """Wait until reading more keeps to the rate, or until a stop is requested."""
        wait = self.delay(nbytes)
        if wait > 0:
            stop.wait(wait)
