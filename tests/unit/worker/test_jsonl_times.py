"""JSON Lines writes a datetime column exactly as `collectjob_api.rfc3339.format_time` writes
a data value (`fraction=True`): the column-wise writer must not become a second format."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa

from collectjob_api.rfc3339 import format_time
from collectjob_worker.formats import JsonlPart


def test_datetimes_are_written_as_the_one_rfc3339_formatter_writes_them() -> None:
    moments = [
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2024, 1, 1, 0, 0, 0, 500, tzinfo=UTC),
        datetime(2024, 2, 29, 23, 59, 59, 500000, tzinfo=UTC),
        datetime(1999, 12, 31, 22, 0, 1, 123456, tzinfo=timezone(timedelta(hours=-2))),
    ]
    table = pa.table({"at": pa.array([*moments, None], pa.timestamp("us", tz="UTC"))})
    part = JsonlPart(table.schema)
    part.write(table)
    lines = b"".join(part.finish()).decode().splitlines()
    expected = [format_time(m, fraction=True) for m in moments] + [None]
    assert [json.loads(line)["at"] for line in lines] == expected
