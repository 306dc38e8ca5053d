"""Retrying transient failures with capped exponential backoff and an overall deadline.

An API server restart, a dropped connection or a throttled object store must cost time, never
progress: the caller's operation is simply tried again until it succeeds, fails for a reason
that is not transient, or the deadline passes (then the last error is raised as it was).
A ReportingBackoff also tells each retry to its `on_retry`, so the job's status can say what
it is waiting for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity

from collectjob_api.backoff import Backoff
from collectjob_api.redact import safe_message

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_BACKOFF = Backoff()
MAX_MESSAGE_CHARS = 300


@dataclass(frozen=True)
class ReportingBackoff(Backoff):
    on_retry: Callable[[BaseException], None] = lambda error: None


@dataclass
class RetryReporter:
    """Tells whoever shows the job's state (the checkpoint, the progress line) that a
    transient failure is being retried. Listeners are added once they exist, after the
    sources and sinks that hold the reporter's backoffs."""

    deadline: float = DEFAULT_BACKOFF.deadline
    listeners: list[Callable[[str, str], None]] = field(default_factory=list)

    def backoff(self, reason: str) -> Backoff:
        """The backoff for one side (reason SourceUnavailable or SinkUnavailable)."""
        return ReportingBackoff(deadline=self.deadline, on_retry=lambda e: self._tell(reason, e))

    def _tell(self, reason: str, error: BaseException) -> None:
        message = safe_message(f"{type(error).__name__}: {error}", MAX_MESSAGE_CHARS)
        for listener in self.listeners:
            listener(reason, message)


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
        if isinstance(backoff, ReportingBackoff) and error is not None:
            backoff.on_retry(error)

    retrying = tenacity.Retrying(
        # Only errors, and only transient ones: a KeyboardInterrupt or SystemExit goes through.
        retry=tenacity.retry_if_exception(lambda e: isinstance(e, Exception) and transient(e)),
        wait=backoff.wait,
        stop=backoff.stop(),
        before_sleep=warn,
        reraise=True,
    )
    return retrying(call)
