"""The throttle keeps the average rate and never delays a stop."""

from __future__ import annotations

import threading
import time

import pytest

from collectjob_worker.throttle import Throttle


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


def test_chunks_are_about_one_second_of_throttled_bytes():
    assert Throttle(4096).chunk_limit(64 << 20) == 4096
    assert Throttle(1 << 30).chunk_limit(1 << 20) == 1 << 20


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
