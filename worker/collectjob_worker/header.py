"""The source's header: read once when a job starts, then kept in the checkpoint.

A resumed worker takes the header from the checkpoint and seeks straight to its offset, so
nothing before that offset is read again. A UTF-8 byte order mark is skipped. Without a
header (`header: false`), columns are named column_1, column_2, ... after the first record.

Names. Without a transform the header's names are the output's column names, so each must
be unique (a duplicate would silently lose one column's values in jsonl, and make parquet
unreadable), and for jsonl and parquet non-empty. Either is a permanent error naming the
columns and their positions; a transform that selects and renames columns lifts the rule.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass

from collectjob_api.contract import DEFAULT_MAX_RECORD_BYTES
from collectjob_worker.chunking import Quoting, iter_chunk
from collectjob_worker.dialect import UTF8_BOM, Dialect
from collectjob_worker.errors import PermanentError
from collectjob_worker.sources import Source

_PROBE_BYTES = 64 << 10


@dataclass(frozen=True)
class Header:
    names: list[str]
    data_offset: int
    """Byte offset of the first data record."""
    data_line: int
    """Line number of the first data record."""


_LISTED = 5
"""Names and positions an error lists at most: the header is the tenant's, the message ours."""


def _short(name: str) -> str:
    return name if len(name) <= 40 else name[:37] + "..."


def _positions(at: list[int]) -> str:
    shown = ", ".join(map(str, at[:_LISTED]))
    return shown if len(at) <= _LISTED else f"{shown} and {len(at) - _LISTED} more"


def check_names(names: list[str], sink_format: str, source_url: str) -> None:
    """Refuse header names that would lose or garble values in the output (see above)."""
    positions: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names, 1):
        positions[name].append(i)
    duplicates = {name: at for name, at in positions.items() if len(at) > 1}
    if duplicates:
        listed = "; ".join(
            f"{_short(name)!r} at columns {_positions(at)}"
            for name, at in list(duplicates.items())[:_LISTED]
        )
        raise PermanentError(
            f"source {source_url}: the header names a column more than once ({listed}), "
            "which would lose values; rename them in the source, or select and rename them "
            "with a transform"
        )
    empty = positions.get("", [])
    if empty and sink_format in ("jsonl", "parquet"):
        raise PermanentError(
            f"source {source_url}: the header has an empty column name at column(s) "
            f"{_positions(empty)}, which {sink_format} output cannot name; "
            "name it in the source or use a transform"
        )


def read_header(
    source: Source, size: int, dialect: Dialect, max_record: int = DEFAULT_MAX_RECORD_BYTES
) -> Header:
    if size == 0:
        return Header([], 0, 1)
    start = len(UTF8_BOM) if dialect.is_utf8 and source.read(0, 3) == UTF8_BOM else 0
    if start >= size:
        return Header([], size, 1)
    quoting = Quoting(dialect.delimiter_byte, dialect.quote_byte)
    first = next(
        iter_chunk(
            source.read,
            offset=start,
            line=1,
            window=1,
            size=size,
            block_bytes=_PROBE_BYTES,
            quoting=quoting,
            max_record=max_record,
        )
    )
    if first.unterminated:
        raise PermanentError(f"source {source.url}: the first record has an unterminated quote")
    try:
        text = first.data.decode(dialect.encoding)
    except UnicodeDecodeError as e:
        raise PermanentError(
            f"source {source.url}: the first line is not valid {dialect.encoding}: {e.reason}"
        ) from e
    rows = csv.reader(
        io.StringIO(text, newline=""), delimiter=dialect.delimiter, quotechar=dialect.quote
    )
    fields = next(rows, [])
    if not fields:
        raise PermanentError(f"source {source.url}: the first line is empty, expected a header")
    if not dialect.header:
        return Header([f"column_{i + 1}" for i in range(len(fields))], start, 1)
    return Header(fields, first.end, first.end_line)
