"""Encoding one part file in memory, in the sink's format (csv, parquet or jsonl).

A part is built in memory, as a list of byte strings (so copied source bytes are not copied
again), and handed to the sink whole, so it can be written atomically.
CSV parts start with a header line; their rows are either pyarrow's rendering of a table
(every string quoted) or, for a byte-exact copy, the source's own bytes. Rejects use the same
format with the columns line, reason and record.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from collectjob_api.rfc3339 import format_time

FORMATS = ("csv", "parquet", "jsonl")
REJECT_SCHEMA = pa.schema([("line", pa.int64()), ("reason", pa.string()), ("record", pa.string())])


class CsvPart:
    def __init__(self, schema: pa.Schema) -> None:
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow(schema.names)
        self._pieces: list[bytes] = [header.getvalue().encode()]

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            out = io.BytesIO()
            pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False))
            self._pieces.append(out.getvalue())

    def write_raw(self, data: bytes) -> None:
        """Append whole CSV records exactly as they are (UTF-8, comma, double quote)."""
        self._pieces.append(data)

    def finish(self) -> list[bytes]:
        return self._pieces


class ParquetPart:
    def __init__(self, schema: pa.Schema) -> None:
        import pyarrow.parquet as pq

        self._out = io.BytesIO()
        self._writer = pq.ParquetWriter(self._out, schema)

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table)

    def finish(self) -> list[bytes]:
        self._writer.close()
        return [self._out.getvalue()]


class JsonlPart:
    def __init__(self, schema: pa.Schema) -> None:
        self._names = schema.names
        self._lines: list[str] = []

    def write(self, table: pa.Table) -> None:
        columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
        for values in zip(*columns, strict=True):
            record = dict(zip(self._names, values, strict=True))
            self._lines.append(json.dumps(record, ensure_ascii=False, default=_json_default))

    def finish(self) -> list[bytes]:
        return ["".join(line + "\n" for line in self._lines).encode()]


def _json_default(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return format_time(value, fraction=True)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


PartWriter = CsvPart | ParquetPart | JsonlPart


def part_writer(fmt: str, schema: pa.Schema) -> PartWriter:
    if fmt == "csv":
        return CsvPart(schema)
    if fmt == "parquet":
        return ParquetPart(schema)
    if fmt == "jsonl":
        return JsonlPart(schema)
    raise ValueError(f"sink format {fmt!r} is not one of {', '.join(FORMATS)}")
