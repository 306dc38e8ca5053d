"""Capped exponential backoff: one schedule for every retry in the project.

The wait after the n-th consecutive failure is `initial * 2**(n-1)`, capped at `maximum`.
Loops that retry a call use `Backoff.wait` with tenacity (`collectjob_worker.retry`); code that
schedules its own next attempt (an event loop, a process supervisor) asks `delay(n)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import tenacity


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.2
    maximum: float = 5.0
    deadline: float = 300.0
    """Give up once the next wait would end more than this many seconds after the first try."""

    def delay(self, failures: int) -> float:
        """The wait after `failures` (>= 1) consecutive failures."""
        return min(self.maximum, self.initial * 2 ** max(0, failures - 1))

    def wait(self, state: tenacity.RetryCallState) -> float:
        """tenacity's `wait=`: the same schedule, by attempt number."""
        return self.delay(state.attempt_number)

    def stop(self) -> tenacity.stop.stop_base:
        """tenacity's `stop=`: before a wait that would pass the deadline."""
        return tenacity.stop_before_delay(self.deadline)
