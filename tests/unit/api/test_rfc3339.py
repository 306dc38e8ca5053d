"""The one RFC 3339 writer and reader shared by the operator and the worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from collectjob_api.rfc3339 import format_time, now_text, parse_time


def test_times_are_written_in_utc_with_a_z_and_whole_seconds() -> None:
    moment = datetime(2024, 5, 6, 9, 8, 7, 654321, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(moment) == "2024-05-06T07:08:07Z"
    assert format_time(None) is None


def test_data_values_keep_their_fraction_when_they_have_one() -> None:
    assert format_time(datetime(2024, 1, 1, tzinfo=UTC), fraction=True) == "2024-01-01T00:00:00Z"
    moment = datetime(2024, 1, 1, 0, 0, 0, 500, tzinfo=UTC)
    assert format_time(moment, fraction=True) == "2024-01-01T00:00:00.000500Z"


def test_what_is_written_reads_back() -> None:
    text = now_text()
    parsed = parse_time(text)
    assert parsed is not None and format_time(parsed) == text
    assert parse_time("2024-01-01T00:00:00") == datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_time("") is None and parse_time("yesterday") is None
