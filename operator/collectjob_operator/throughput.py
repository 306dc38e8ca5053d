"""Recent throughput of a job's worker, for the ETA in its status.

The checkpoint says how far the worker is; the rate comes from the last few checkpoints
the operator saw, so a job resumed after a long suspension is not judged by its
average since creation.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

WINDOW = 10
"""Checkpoints kept per job: about ten seconds of work at one chunk per second."""


@dataclass
class Throughput:
    samples: deque[tuple[datetime, int]] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def observe(self, at: datetime, offset: int) -> None:
        """Record the byte offset a checkpoint reported at a time; repeats are ignored."""
        if self.samples and self.samples[-1][1] == offset:
            return
        if self.samples and offset < self.samples[-1][1]:
            self.samples.clear()
        self.samples.append((at, offset))

    def eta(self, offset: int, total: int) -> datetime | None:
        """When the source will be done at the recent rate; None without a usable rate."""
        if len(self.samples) < 2 or total <= 0:
            return None
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        seconds = (t1 - t0).total_seconds()
        if seconds <= 0 or b1 <= b0:
            return None
        rate = (b1 - b0) / seconds
        return t1 + timedelta(seconds=max(0, total - offset) / rate)
