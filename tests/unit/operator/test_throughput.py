"""ETA from recent checkpoints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from collectjob_operator.throughput import Throughput

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_no_estimate_from_a_single_checkpoint():
    t = Throughput()
    t.observe(T0, 100)
    assert t.eta(100, 1000) is None


def test_estimate_from_the_recent_rate():
    t = Throughput()
    t.observe(T0, 0)
    t.observe(T0 + timedelta(seconds=10), 100)
    assert t.eta(100, 1000) == T0 + timedelta(seconds=100)


def test_repeated_offsets_do_not_count_and_a_restart_clears_the_window():
    t = Throughput()
    t.observe(T0, 0)
    t.observe(T0 + timedelta(seconds=10), 100)
    t.observe(T0 + timedelta(seconds=99), 100)
    assert t.eta(100, 1000) == T0 + timedelta(seconds=100)
    t.observe(T0 + timedelta(seconds=100), 50)
    assert t.eta(50, 1000) is None
