"""Reading a sink's parts back with the common readers a user would use: pyarrow's dataset
reader, pandas and DuckDB. Every value is read as a string, as the worker writes it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

Rows = list[list[str]]


def _parts(sink: Path, fmt: str) -> list[str]:
    """Every part file, as a user would list them: none is left out (a chunk that accepted
    no rows writes no part, so there is no empty file for a reader to refuse)."""
    return [str(p) for p in sorted(sink.glob(f"part-*.{fmt}"))]


def with_pyarrow(sink: Path, fmt: str, header: list[str]) -> Rows:
    strings = {name: pa.string() for name in header}
    file_format: ds.FileFormat | str
    if fmt == "csv":
        file_format = ds.CsvFileFormat(
            convert_options=pacsv.ConvertOptions(
                column_types=strings,
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
            read_options=pacsv.ReadOptions(block_size=64 << 20),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
        )
    else:
        file_format = "json" if fmt == "jsonl" else fmt
    schema = pa.schema([(name, pa.string()) for name in header])
    table = ds.dataset(_parts(sink, fmt), format=file_format, schema=schema).to_table()
    return [list(row.values()) for row in table.to_pylist()]


def with_pandas(sink: Path, fmt: str, header: list[str]) -> Rows:
    frames = []
    for path in _parts(sink, fmt):
        if fmt == "csv":
            frames.append(pd.read_csv(path, dtype=str, keep_default_na=False))
        elif fmt == "jsonl":
            # dtype=False keeps every value as written, date-like names included.
            frames.append(pd.read_json(path, lines=True, dtype=False, orient="records"))
        else:
            frames.append(pd.read_parquet(path))
    frame = pd.concat(frames, ignore_index=True)
    # By position: pandas renames an empty CSV column name ("Unnamed: 1").
    return [[str(v) for v in row] for row in frame.itertuples(index=False)]


def with_duckdb(sink: Path, fmt: str, header: list[str]) -> Rows:
    files = json.dumps(_parts(sink, fmt)).replace('"', "'")
    columns = "{" + ", ".join(f"{_quote(n)}: 'VARCHAR'" for n in header) + "}"
    if fmt == "csv":
        source = (
            f"read_csv({files}, header=true, all_varchar=true, max_line_size=100000000, "
            "delim=',', quote='\"', escape='\"', "
            "allow_quoted_nulls=false, nullstr='\\N-none')"
        )
    elif fmt == "jsonl":
        source = f"read_json({files}, format='newline_delimited', columns={columns})"
    else:
        source = f"read_parquet({files})"
    with duckdb.connect() as db:
        rows = db.execute(f"SELECT * FROM {source}").fetchall()
    return [list(row) for row in rows]


def _quote(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"


Reader = Callable[[Path, str, list[str]], Rows]


def _no_parts_no_rows(read: Reader) -> Reader:
    """A sink without rows has no part file (every chunk was rejected, or the source had only
    a header): there is nothing to read, and pandas and DuckDB refuse an empty list of files,
    as a user's glob that matches nothing would be."""

    def guarded(sink: Path, fmt: str, header: list[str]) -> Rows:
        return read(sink, fmt, header) if _parts(sink, fmt) else []

    return guarded


READERS: dict[str, Reader] = {
    "pyarrow": _no_parts_no_rows(with_pyarrow),
    "pandas": _no_parts_no_rows(with_pandas),
    "duckdb": _no_parts_no_rows(with_duckdb),
}
