"""The source's header: read once when a job starts, then kept in the checkpoint.

A resumed worker takes the header from the checkpoint and seeks straight to its offset, so
nothing before that offset is read again. A UTF-8 byte order mark is skipped. Without a
header (`header: false`), columns are named column_1, column_2, ... after the first record.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

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


def read_header(source: Source, size: int, dialect: Dialect) -> Header:
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
