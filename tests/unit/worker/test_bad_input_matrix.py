"""The bad-input matrix: every odd input a user may meet, with its expected outcome in each
sink format, either the rows and rejects (rows checked value by value against Python's csv
module, and read back with pyarrow, pandas and DuckDB) or the exact permanent error.

Never silence: each case ends in rows, rejects with line numbers, or a clear error, and the
bytes of the source are accounted for in `_manifest.json`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from collectjob_worker.dialect import Dialect
from collectjob_worker.errors import PermanentError
from unit.worker.readers import READERS

FORMATS = ("csv", "jsonl", "parquet")
csv.field_size_limit(1 << 30)  # the expected values of the 50 MB field come from the csv module


@dataclass(frozen=True)
class Outcome:
    rows: int = 0
    rejects: tuple[int, ...] = ()
    """Source line numbers of the rejected records."""
    error: str = ""
    """A fragment of the exact permanent error, if the job must fail."""


@dataclass(frozen=True)
class Case:
    data: bytes = b""
    expected: Outcome = Outcome()
    by_format: dict[str, Outcome] = field(default_factory=dict)
    dialect: dict[str, object] = field(default_factory=dict)
    source: str = ""
    """A source URL or path to use instead of a file holding `data` ({tmp} is the test dir)."""
    transform: dict[str, object] | None = None
    max_record_bytes: int = 64 << 20

    def outcome(self, fmt: str) -> Outcome:
        return self.by_format.get(fmt, self.expected)


WIDE = ",".join(f"c{i}" for i in range(4_000)).encode()
TOO_WIDE = ",".join(f"c{i}" for i in range(10_000)).encode()
EMPTY_NAME = "the header has an empty column name at column(s) 2"

CASES: dict[str, Case] = {
    "empty_file": Case(b"", Outcome(0)),
    "header_only": Case(b"a,b\n", Outcome(0)),
    "header_only_no_newline": Case(b"a,b", Outcome(0)),
    "only_newlines": Case(b"\n\n\n", Outcome(error="the first line is empty, expected a header")),
    "ragged_rows": Case(b"a,b\n1\n2,3\n4,5,6\n", Outcome(1, (2, 4))),
    "trailing_delimiter": Case(b"a,b\n1,2,\n3,4\n", Outcome(1, (2,))),
    "bad_utf8": Case(b"a,b\n1,\xff\n2,3\n", Outcome(1, (2,))),
    "unterminated_quote": Case(b'a,b\n1,2\n3,"open\n4,5\n', Outcome(1, (3,))),
    "unterminated_quote_in_header": Case(
        b'"a,b\n1,2\n', Outcome(error="the first record has an unterminated quote")
    ),
    "stray_quote": Case(b'size,dish\n12" pizza,"ab"c\n5",x\n', Outcome(2)),
    "nul_byte": Case(b"a,b\n1,x\x00y\n2,3\n", Outcome(2)),
    "no_final_newline": Case(b"a,b\n1,2\n3,4", Outcome(2)),
    "blank_lines": Case(b"a,b\n\n1,2\n\r\n3,4\n\n", Outcome(2)),
    "single_column_blank_line_is_a_value": Case(b"a\n1\n\n2\n", Outcome(3)),
    "lf": Case(b"a,b\n1,2\n3,4\n", Outcome(2)),
    "crlf": Case(b"a,b\r\n1,2\r\n3,4\r\n", Outcome(2)),
    "cr_only": Case(b"a,b\r1,2\r3,4\r", Outcome(2)),
    "cr_only_no_final": Case(b"a,b\r1,2\r3,4", Outcome(2)),
    "cr_inside_quotes": Case(b'a,b\r1,"x\ry"\r3,"p\r\nq"\r', Outcome(2)),
    "mixed_line_endings": Case(b"a,b\r\n1,2\n3,4\r5,6\r\n7,8", Outcome(4)),
    "cr_header_lf_body": Case(b"a,b\r1,2\n3,4\n", Outcome(2)),
    "bom": Case(b"\xef\xbb\xbfid,name\r\n1,x\r\n", Outcome(1)),
    "quoted_newline_in_header": Case(b'"a\nb",c\n1,2\n', Outcome(1)),
    "empty_quoted_values": Case(b'a,b\n"",""\n,\n', Outcome(2)),
    "lossless_values": Case(b'a,b,c\n007,NA,"  x "\nnull,,1e5\n', Outcome(2)),
    "four_thousand_columns": Case(WIDE + b"\n" + WIDE + b"\n", Outcome(1)),
    "ten_thousand_columns": Case(
        TOO_WIDE + b"\n" + TOO_WIDE + b"\n",
        Outcome(
            error="the source's header has 10000 columns, over the limit of 4096 (MAX_COLUMNS)"
        ),
    ),
    "field_of_50_mb": Case(b'a,b\n1,"' + b"x" * (50 << 20) + b'"\n2,y\n', Outcome(2)),
    "latin1": Case(
        "k;v\n1;caf\xe9\n".encode("latin-1"),
        Outcome(1),
        dialect={"delimiter": ";", "encoding": "latin-1"},
    ),
    "duplicate_header": Case(
        b"a,a,b\n1,2,3\n",
        Outcome(error="names a column more than once ('a' at columns 1, 2)"),
    ),
    "duplicate_header_renamed_by_transform": Case(
        b"a,a,b\n1,2,3\n",
        Outcome(1),
        transform={"columns": [{"name": "b_renamed", "from": "b"}]},
    ),
    "empty_header_name": Case(
        b"a,,b\n1,2,3\n",
        Outcome(1),
        by_format={"jsonl": Outcome(error=EMPTY_NAME), "parquet": Outcome(error=EMPTY_NAME)},
    ),
    "record_over_the_limit": Case(
        b'a,b\n1,2\n3,"' + b"x\n" * 3000 + b'"\n',
        Outcome(
            error="the record starting at line 3 (byte 8) is longer than the maximum "
            "record size of 1,024 bytes"
        ),
        max_record_bytes=1024,
    ),
    "no_line_endings_over_the_limit": Case(
        b"a,b\n" + b"x" * 5000,
        Outcome(error="the record starting at line 2 (byte 4) is longer than the maximum"),
        max_record_bytes=1024,
    ),
    "missing_file": Case(
        source="{tmp}/nowhere.csv", expected=Outcome(error="No such file or directory")
    ),
    "directory": Case(source="{tmp}", expected=Outcome(error="Is a directory")),
    "bad_scheme": Case(
        source="ftp://example.invalid/x.csv",
        expected=Outcome(error="scheme 'ftp' is not one of file, http, https, s3"),
    ),
    "bad_delimiter": Case(
        b"a,b\n",
        Outcome(error="source delimiter must be one ASCII character other than CR or LF"),
        dialect={"delimiter": "ab"},
    ),
    "utf16": Case(
        "a,b\n1,2\n".encode("utf-16"),
        Outcome(error="source encoding 'utf-16' is not ASCII-compatible"),
        dialect={"encoding": "utf-16"},
    ),
    "unknown_encoding_rot13": Case(
        b"a,b\n1,2\n",
        Outcome(error="unknown source encoding 'rot13'"),
        dialect={"encoding": "rot13"},
    ),
}


def _run(jobs, case: Case, fmt: str, chunk_bytes: int) -> tuple[str, object]:
    """('error', message) or ('ok', pipeline)."""
    try:
        dialect = Dialect(**case.dialect)  # type: ignore[arg-type]
        source = case.source.format(tmp=jobs.tmp) if case.source else jobs.write(case.data)
        job = jobs.job(
            source,
            fmt=fmt,
            chunk_bytes=chunk_bytes,
            dialect=dialect,
            transform=case.transform,
            max_record_bytes=case.max_record_bytes,
        )
        pipeline = jobs.pipeline(job)
        pipeline.run()
    except PermanentError as e:
        return "error", str(e)
    return "ok", pipeline


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(jobs, outputs, name: str, fmt: str) -> None:
    case = CASES[name]
    want = case.outcome(fmt)
    # Tiny chunks cut everywhere; big inputs (10,000 columns, a 50 MB field) once, to stay quick.
    for chunk_bytes in (7, 1 << 20) if len(case.data) < 100_000 else (1 << 20,):
        sink = jobs.tmp / "sink"
        for leftover in (sink, jobs.tmp / "state.json"):
            _remove(leftover)
        kind, result = _run(jobs, case, fmt, chunk_bytes)
        if want.error:
            assert kind == "error" and want.error in str(result), result
            assert not (sink / "_SUCCESS").exists()
            continue
        assert kind == "ok", result
        expected = outputs.expected(case.data, **_csv_dialect(case))
        header = expected.header if case.transform is None else ["b_renamed"]
        rows = outputs.values(sink, fmt, header)
        rejects = [int(r["line"]) for r in outputs.rejects(sink, fmt)]
        assert (len(rows), tuple(rejects)) == (want.rows, want.rejects)
        if case.transform is None:
            assert rows == expected.rows and rejects == expected.rejects
        manifest = json.loads((sink / "_manifest.json").read_text())
        total = manifest["bytes_header"] + manifest["bytes_accepted"] + manifest["bytes_rejected"]
        assert total == len(case.data)
        assert (manifest["bytes_rejected"] > 0) == bool(want.rejects)
        if rows and len(case.data) < 1 << 20 and chunk_bytes > 7:
            for reader, read in READERS.items():
                assert read(sink, fmt, header) == rows, reader


def _csv_dialect(case: Case) -> dict[str, str]:
    return {k: str(v) for k, v in case.dialect.items() if k in ("delimiter", "quote", "encoding")}


def _remove(path: Path) -> None:
    if path.is_dir():
        import shutil

        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def test_the_matrix_covers_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30
