"""spec.throttle.bytesPerSecond: pace the worker's reads so a source or sink is not overloaded.

The pacing happens between chunks, after a chunk has committed, and waits on the stop event:
a stop request ends the wait at once, so throttling never eats into the stop budget (the
pod's grace period). A chunk holds about one second of throttled bytes, so progress and
checkpoints keep moving every second or so, but never less than SMALLEST_CHUNK_BYTES, so a
slow job does not write its checkpoint every second for a few bytes of progress.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

SMALLEST_CHUNK_BYTES = 64 << 10
"""The least a throttled chunk holds (unless chunkBytes is smaller): below 64 KiB/s a job
commits once per 64 KiB rather than once a second. At the CRD's minimum rate, 1 KiB/s, a
checkpoint written every second would be about as large as the data it records, and a
hundred such jobs would write a hundred ConfigMaps a second and keep both cores of a small
node busy with their commits. The average rate is kept all the same: the pacing after a
larger chunk is longer."""


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
        """The chunk bound under this throttle: one second of reading, at least
        SMALLEST_CHUNK_BYTES, at most `chunk_bytes`."""
        return min(chunk_bytes, max(SMALLEST_CHUNK_BYTES, self.rate))

    def delay(self, nbytes: int) -> float:
        """Count `nbytes` as read; the seconds to wait before reading more."""
        self._bytes += nbytes
        return max(0.0, self._start + self._bytes / self.rate - self._clock())

    def pace(self, nbytes: int, stop: threading.Event) -> None:
        """Wait until reading more keeps to the rate, or until a stop is requested."""
        wait = self.delay(nbytes)
        if wait > 0:
            stop.wait(wait)
