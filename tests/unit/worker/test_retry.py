"""The one backoff schedule, and the worker's retry loop built on it with tenacity."""

from __future__ import annotations

import logging

import pytest

from collectjob_api.backoff import Backoff
from collectjob_worker.retry import retry


def test_the_wait_doubles_from_initial_up_to_the_cap() -> None:
    backoff = Backoff(initial=0.5, maximum=3.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


class Flaky:
    """Fails with `error` the first `failures` times it is called, then returns "done"."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.left, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.left:
            self.left -= 1
            raise self.error
        return "done"


FAST = Backoff(initial=0.001, maximum=0.004, deadline=5.0)


def test_transient_failures_are_retried_with_a_warning_each(caplog) -> None:
    flaky = Flaky(3, ConnectionError("reset"))
    with caplog.at_level(logging.WARNING):
        assert retry(flaky, transient=lambda e: True, what="read", backoff=FAST) == "done"
    assert flaky.calls == 4
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings[0] == "read failed (attempt 1, retrying in 0.0s): reset"
    assert len(warnings) == 3


def test_a_permanent_failure_is_raised_at_once() -> None:
    flaky = Flaky(3, FileNotFoundError("gone"))
    with pytest.raises(FileNotFoundError, match="gone"):
        retry(flaky, transient=lambda e: isinstance(e, ConnectionError), what="read", backoff=FAST)
    assert flaky.calls == 1


def test_the_deadline_ends_the_retries_with_the_last_error() -> None:
    flaky = Flaky(10**6, ConnectionError("down"))
    short = Backoff(initial=0.01, maximum=0.02, deadline=0.1)
    with pytest.raises(ConnectionError, match="down"):
        retry(flaky, transient=lambda e: True, what="read", backoff=short)
    assert 2 <= flaky.calls < 20
