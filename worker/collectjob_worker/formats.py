"""Encoding one part file in memory, in the sink's format (csv, parquet or jsonl).

A part is built in memory, as a list of bytes-like pieces (so copied source bytes and JSON
Lines joined by Arrow are not copied again), and handed to the sink whole, so it can be
written atomically.
CSV parts start with a header line; their rows are either pyarrow's rendering of a table
(every string quoted) or, for a byte-exact copy, the source's own bytes. Rejects use the same
format with the columns line, reason and record.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from collectjob_api.contract import SinkOptions
from collectjob_worker.arrowstrings import value_buffer, value_bytes

FORMATS = ("csv", "parquet", "jsonl")
REJECT_SCHEMA = pa.schema([("line", pa.int64()), ("reason", pa.string()), ("record", pa.string())])


class _Pieces:
    """A part built by appending: its pieces, and the SHA-256 of their bytes taken as each
    comes, on the encoder's thread while the committer writes the part before. (Taken by the
    committer, the hash of the bench's 400 MB of JSON Lines parts held up the encoder, which
    may not start a part until the one before is written: csv -> jsonl took 1.27 s, 1.18 s
    with the hash taken here, medians of 7 A/B rounds.)"""

    def __init__(self) -> None:
        self._pieces: list[bytes | pa.Buffer] = []
        self._digest = hashlib.sha256()
        self.held_bytes = 0
        """What the part holds in memory so far."""

    def write_raw(self, data: bytes | pa.Buffer) -> None:
        """Append bytes already in the part's format."""
        if data:
            self._pieces.append(data)
            self._digest.update(data)
            self.held_bytes += len(data)

    def finish(self) -> list[bytes]:
        return self._pieces

    @property
    def sha256(self) -> str:
        """The SHA-256 of the bytes `finish` returns."""
        return self._digest.hexdigest()


class CsvPart(_Pieces):
    """A header line, then whole CSV records (UTF-8, comma, double quote)."""

    def __init__(self, schema: pa.Schema) -> None:
        super().__init__()
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow(schema.names)
        self.write_raw(header.getvalue().encode())

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            out = io.BytesIO()
            pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False))
            self.write_raw(out.getvalue())


class ParquetPart:
    """A Parquet part: row groups of at least ROW_GROUP_BYTES of table data, snappy-compressed
    unless the sink asks for zstd, with dictionary encoding only for the columns whose values
    repeat.

    Measured on the bench file (7 string columns, 500,000 rows; `tests/bench`): a row group
    per 4 MiB block with dictionaries on every column took 0.24 s of CPU for 13.1 MB; 16 MiB
    row groups with dictionaries where they pay 0.12 s for 8.8 MB (the same as one row group
    for the whole part, which would hold a whole chunk's table in memory). A dictionary on a
    column of unique values (ids, e-mails) only costs: it never exceeds the page limit within
    a row group, so the writer never falls back. Which columns repeat is judged on the first
    SAMPLE_ROWS rows of the part, so a redone chunk is encoded the same way. zstd made the
    same part 3.2 MB for 0.13-0.15 s: smaller, a little slower, so it is opt-in.

    Min/max statistics are written unless the sink turns them off: readers skip row groups
    with them. They are about a tenth of the worker's CPU on the bench (encoding the whole
    file took 0.38 s with them, 0.28 s without, of 1.2 CPU-s for the job; perf puts 11% of
    the job's samples in the writer's min/max loop and the memcmp it calls), so a sink whose
    parts are only read whole may save it.
    """

    ROW_GROUP_BYTES = 16 << 20
    SAMPLE_ROWS = 8192

    def __init__(self, schema: pa.Schema, options: SinkOptions) -> None:
        self._schema, self._options = schema, options
        self._out = pa.BufferOutputStream()
        """Arrow's own stream: the writer appends each page to it without taking the GIL,
        which writing into an io.BytesIO held for 15% of the worker's GIL time."""
        self._writer: Any = None
        self._sha256 = ""
        self._tables: list[pa.Table] = []
        self._buffered = 0

    @property
    def held_bytes(self) -> int:
        """What the part holds in memory so far: the tables of its next row group, and the
        row groups written."""
        return self._buffered + self._out.tell()

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._tables.append(table)
            self._buffered += table.nbytes
            if self._buffered >= self.ROW_GROUP_BYTES:
                self._flush()

    def _flush(self) -> None:
        import pyarrow.parquet as pq

        table = pa.concat_tables(self._tables) if self._tables else self._schema.empty_table()
        self._tables, self._buffered = [], 0
        if self._writer is None:
            self._writer = pq.ParquetWriter(
                self._out,
                self._schema,
                compression=self._options.compression,
                use_dictionary=_repeating(table),
                write_statistics=self._options.statistics,
            )
        if table.num_rows:
            self._writer.write_table(table, row_group_size=table.num_rows)

    def finish(self) -> list[bytes]:
        self._flush()
        self._writer.close()
        data = self._out.getvalue()
        self._sha256 = hashlib.sha256(data).hexdigest()
        return [data]

    @property
    def sha256(self) -> str:
        """The SHA-256 of the bytes `finish` returned, taken there (on the encoder's thread,
        as the other parts' are)."""
        return self._sha256


def _repeating(table: pa.Table) -> list[str]:
    """Columns where at most half of the sampled values are distinct."""
    sample = table.slice(0, ParquetPart.SAMPLE_ROWS)
    return [
        name
        for name, column in zip(sample.column_names, sample.columns, strict=True)
        if 2 * pc.count_distinct(column).as_py() <= sample.num_rows
    ]


class JsonlPart(_Pieces):
    """One JSON object per row, built column-wise with pyarrow compute (no per-row Python).

    The bytes are those of `json.dumps(row, ensure_ascii=False)` for string, integer and
    boolean values and null; numbers are the shortest text that reads back as the same
    double, and datetimes as `collectjob_api.rfc3339.format_time(..., fraction=True)` writes
    them (UTC with a `Z`, microseconds only when there are any; tests/unit/worker/
    test_jsonl_times.py holds the two together).
    """

    def __init__(self, schema: pa.Schema) -> None:
        super().__init__()

    def write(self, table: pa.Table) -> None:
        """Lines encoded here; `write_raw` takes those `jsonl_lines` encoded on a parser's
        thread, block by block (the line of a row depends on nothing else)."""
        self.write_raw(jsonl_lines(table))


def jsonl_lines(table: pa.Table) -> bytes | pa.Buffer:
    """The table's rows as JSON Lines: one `binary_join_element_wise` over the columns' texts
    and the literals between them; a column's own quotes go into those literals unless it has
    nulls.

    The lines stay in the Arrow buffer they were joined into (bytes-like, so a part and the
    sink take it as bytes): a copy into a Python bytes would cost time and, allocated on a
    parser's thread by the C library's malloc, would be kept in that thread's arena after the
    part is written instead of going back to the system as pyarrow's jemalloc does."""
    if not table.num_rows:
        return b""
    parts: list[pa.Array | str] = []
    closing = ""
    for i, (name, column) in enumerate(zip(table.column_names, table.columns, strict=True)):
        key = json.dumps(name, ensure_ascii=False)
        text = _json_values(column)
        parts += [f"{closing}{'{' if i == 0 else ', '}{key}: {text.before}", text.values]
        closing = text.after
    parts.append(closing + "}\n")
    lines = pc.binary_join_element_wise(*parts, "")
    return value_buffer(lines)


_SHORT_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}
_JSON_ESCAPES = {chr(c): f"\\u{c:04x}" for c in range(0x20)} | _SHORT_ESCAPES


@dataclass(frozen=True)
class _JsonText:
    """A column as JSON: each value is `before + values[i] + after` (no nulls left)."""

    values: pa.Array
    before: str = ""
    after: str = ""

    def enclosed(self) -> pa.Array:
        return pc.binary_join_element_wise(self.before, self.values, self.after, "")


def _json_values(column: pa.ChunkedArray) -> _JsonText:
    """Each value of a column as JSON text, nulls as `null`."""
    values = column.combine_chunks()
    if _is_text(values.type):
        values = values.cast(pa.string())
    if pa.types.is_string(values.type):
        text = _JsonText(_escaped(values), '"', '"')
    elif pa.types.is_timestamp(values.type):
        seconds = pc.strftime(values, format="%Y-%m-%dT%H:%M:%S")
        text = _JsonText(pc.replace_substring_regex(seconds, r"\.0+$", ""), '"', 'Z"')
    else:
        text = _JsonText(pc.cast(values, pa.string()))
    if text.values.null_count:
        return _JsonText(pc.fill_null(text.enclosed(), "null"))
    return text


def _is_text(kind: pa.DataType) -> bool:
    """Text in another layout than `string`: a processor's pandas `string[pyarrow]` column
    arrives as `large_string`, a categorical as a dictionary; both must be quoted like text."""
    if pa.types.is_dictionary(kind):
        return _is_text(kind.value_type) or pa.types.is_string(kind.value_type)
    return pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _escaped(values: pa.Array) -> pa.Array:
    """Escaped for JSON, without the quotes; one pass over the bytes finds which characters
    need escaping (usually none or a few), and only those are replaced, the backslash first."""
    data = value_bytes(values)
    escaped = data < 0x20
    escaped |= data == ord('"')
    escaped |= data == ord("\\")
    if not escaped.any():
        return values
    for char in sorted(map(chr, np.unique(data[escaped])), key=lambda c: c != "\\"):
        values = pc.replace_substring(values, char, _JSON_ESCAPES[char])
    return values


PartWriter = CsvPart | ParquetPart | JsonlPart


def part_writer(fmt: str, schema: pa.Schema, options: SinkOptions) -> PartWriter:
    if fmt == "csv":
        return CsvPart(schema)
    if fmt == "parquet":
        return ParquetPart(schema, options)
    if fmt == "jsonl":
        return JsonlPart(schema)
    raise ValueError(f"sink format {fmt!r} is not one of {', '.join(FORMATS)}")
