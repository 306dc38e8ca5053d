"""Retrying transient failures with capped exponential backoff and an overall deadline.

An API server restart, a dropped connection or a throttled object store must cost time, never
progress: the caller's operation is simply tried again until it succeeds, fails for a reason
that is not transient, or the deadline passes (then the last error is raised as it was).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import tenacity

from collectjob_api.backoff import Backoff

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_BACKOFF = Backoff()


def retry(
    call: Callable[[], T],
    *,
    transient: Callable[[BaseException], bool],
    what: str,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> T:
    def warn(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        attempt = state.attempt_number
        log.warning("%s failed (attempt %d, retrying in %.1fs): %s", what, attempt, delay, error)

    retrying = tenacity.Retrying(
        # Only errors, and only transient ones: a KeyboardInterrupt or SystemExit goes through.
        retry=tenacity.retry_if_exception(lambda e: isinstance(e, Exception) and transient(e)),
        wait=backoff.wait,
        stop=backoff.stop(),
        before_sleep=warn,
        reraise=True,
    )
    return retrying(call)
