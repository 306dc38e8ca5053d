"""Retrying transient failures with capped exponential backoff and an overall deadline.

An API server restart, a dropped connection or a throttled object store must cost time, never
progress: the caller's operation is simply tried again until it succeeds, fails for a reason
that is not transient, or the deadline passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.2
    maximum: float = 5.0
    deadline: float = 300.0
    """Give up after this many seconds of consecutive transient failures."""


DEFAULT_BACKOFF = Backoff()


def retry(
    call: Callable[[], T],
    *,
    transient: Callable[[BaseException], bool],
    what: str,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> T:
    started = time.monotonic()
    delay = backoff.initial
    attempt = 1
    while True:
        try:
            return call()
        except Exception as e:
            waited = time.monotonic() - started
            if not transient(e) or waited + delay > backoff.deadline:
                raise
            log.warning("%s failed (attempt %d, retrying in %.1fs): %s", what, attempt, delay, e)
        time.sleep(delay)
        delay = min(backoff.maximum, delay * 2)
        attempt += 1
