"""The bad-input matrix: every odd input a user may meet, with its expected outcome in each
sink format, either the rows and rejects (rows checked value by value against Python's csv
module, and read back with pyarrow, pandas and DuckDB) or the exact permanent error.

Never silence: each case ends in rows, rejects with line numbers, or a clear error, and the
bytes of the source are accounted for in `_manifest.json`. Every part is read back by every
reader, also when whole chunks, or the whole file, were rejected (such a chunk writes no part).

docs/bad-input-matrix.md is rendered from CASES (`render_matrix`), and a test checks that it
matches; after changing a case, write it again with
`PYTHONPATH=hack:tests .venv/bin/python tests/unit/worker/test_bad_input_matrix.py`.
"""

from __future__ import annotations

import csv
import json
import shutil
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
    """The exact permanent error, if the job must fail ({tmp} is the test dir)."""

    def render(self) -> str:
        if self.error:
            return "error: `" + self.error.format(tmp=DOC_DIR) + "`"
        text = f"{self.rows} row{'' if self.rows == 1 else 's'}"
        if self.rejects:
            lines = "line" if len(self.rejects) == 1 else "lines"
            text += f", rejected {lines} " + ", ".join(map(str, self.rejects))
        return text


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
    about: str = ""
    """The input, for the doc, when its bytes are too long to show."""

    def outcome(self, fmt: str) -> Outcome:
        return self.by_format.get(fmt, self.expected)

    def describe(self) -> str:
        shown = self.source.format(tmp=DOC_DIR) or self.about or _shown(self.data)
        options = {**self.dialect}
        if self.transform is not None:
            options["transform"] = self.transform
        if self.max_record_bytes != 64 << 20:
            options["max_record_bytes"] = self.max_record_bytes
        return shown + "".join(f"; {k}={v!r}" for k, v in options.items())


def _shown(data: bytes) -> str:
    text = repr(data)
    return "`" + (text if len(text) <= 60 else text[:57] + "...") + "`"


WIDE = ",".join(f"c{i}" for i in range(4_000)).encode()
TOO_WIDE = ",".join(f"c{i}" for i in range(10_000)).encode()
DOC_DIR = "<dir>"
"""Stands for the job's directory in the doc's error messages."""
RECORD_TOO_LONG = (
    "the record starting at line {line} (byte {byte}) is longer than the maximum record size "
    "of 1,024 bytes: an unterminated quote, a file without line endings, or a record that "
    "needs a higher limit (maxRecordBytes)"
)


def _empty_name(fmt: str) -> Outcome:
    return Outcome(
        error="source {tmp}/source.csv: the header has an empty column name at column(s) 2, "
        f"which {fmt} output cannot name; name it in the source or use a transform"
    )


CASES: dict[str, Case] = {
    "empty_file": Case(b"", Outcome(0)),
    "header_only": Case(b"a,b\n", Outcome(0)),
    "header_only_no_newline": Case(b"a,b", Outcome(0)),
    "only_newlines": Case(
        b"\n\n\n",
        Outcome(error="source {tmp}/source.csv: the first line is empty, expected a header"),
    ),
    "ragged_rows": Case(b"a,b\n1\n2,3\n4,5,6\n", Outcome(1, (2, 4))),
    "every_record_rejected": Case(b"a,b\n1\n2\n3,4,5\n", Outcome(0, (2, 3, 4))),
    "rejects_only_chunks_between_rows": Case(
        b"a,b\n1,2\nbad-record-1\nbad-record-2\n3,4\n", Outcome(2, (3, 4))
    ),
    "trailing_delimiter": Case(b"a,b\n1,2,\n3,4\n", Outcome(1, (2,))),
    "bad_utf8": Case(b"a,b\n1,\xff\n2,3\n", Outcome(1, (2,))),
    "unterminated_quote": Case(b'a,b\n1,2\n3,"open\n4,5\n', Outcome(1, (3,))),
    "unterminated_quote_in_header": Case(
        b'"a,b\n1,2\n',
        Outcome(error="source {tmp}/source.csv: the first record has an unterminated quote"),
    ),
    "stray_character_after_a_quote_then_an_unterminated_quote": Case(
        b'a,b,c\n1,2,3\n""a,,"', Outcome(1, (3,))
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
    "four_thousand_columns": Case(
        WIDE + b"\n" + WIDE + b"\n", Outcome(1), about="a header and a row of 4,000 columns"
    ),
    "ten_thousand_columns": Case(
        TOO_WIDE + b"\n" + TOO_WIDE + b"\n",
        Outcome(
            error="the source's header has 10000 columns, over the limit of 4096 (MAX_COLUMNS) "
            "that state file {tmp}/state.json can hold"
        ),
        about="a header and a row of 10,000 columns",
    ),
    "field_of_50_mb": Case(
        b'a,b\n1,"' + b"x" * (50 << 20) + b'"\n2,y\n',
        Outcome(2),
        about="two rows, the first with a quoted field of 50 MiB",
    ),
    "latin1": Case(
        "k;v\n1;caf\xe9\n".encode("latin-1"),
        Outcome(1),
        dialect={"delimiter": ";", "encoding": "latin-1"},
    ),
    "duplicate_header": Case(
        b"a,a,b\n1,2,3\n",
        Outcome(
            error="source {tmp}/source.csv: the header names a column more than once ('a' at "
            "columns 1, 2), which would lose values; rename them in the source, or select and "
            "rename them with a transform"
        ),
    ),
    "duplicate_header_renamed_by_transform": Case(
        b"a,a,b\n1,2,3\n",
        Outcome(1),
        transform={"columns": [{"name": "b_renamed", "from": "b"}]},
    ),
    "empty_header_name": Case(
        b"a,,b\n1,2,3\n",
        Outcome(1),
        by_format={"jsonl": _empty_name("jsonl"), "parquet": _empty_name("parquet")},
    ),
    "record_over_the_limit": Case(
        b'a,b\n1,2\n3,"' + b"x\n" * 3000 + b'"\n',
        Outcome(error=RECORD_TOO_LONG.format(line=3, byte=8)),
        max_record_bytes=1024,
        about="a record of 6,000 bytes (an unterminated quote over 3,000 lines)",
    ),
    "no_line_endings_over_the_limit": Case(
        b"a,b\n" + b"x" * 5000,
        Outcome(error=RECORD_TOO_LONG.format(line=2, byte=4)),
        max_record_bytes=1024,
        about="a header, then 5,000 bytes without a line ending",
    ),
    "missing_file": Case(
        source="{tmp}/nowhere.csv",
        expected=Outcome(error="cannot read source {tmp}/nowhere.csv: No such file or directory"),
    ),
    "directory": Case(
        source="{tmp}", expected=Outcome(error="cannot read source {tmp}: Is a directory")
    ),
    "bad_scheme": Case(
        source="ftp://example.invalid/x.csv",
        expected=Outcome(
            error="source ftp://example.invalid/x.csv: scheme 'ftp' is not one of file, http, "
            "https, s3"
        ),
    ),
    "bad_delimiter": Case(
        b"a,b\n",
        Outcome(error="source delimiter must be one ASCII character other than CR or LF, got 'ab'"),
        dialect={"delimiter": "ab"},
    ),
    "utf16": Case(
        "a,b\n1,2\n".encode("utf-16"),
        Outcome(
            error="source encoding 'utf-16' is not ASCII-compatible; use one such as utf-8, "
            "latin-1 or cp1252"
        ),
        dialect={"encoding": "utf-16"},
    ),
    "unknown_encoding_rot13": Case(
        b"a,b\n1,2\n",
        Outcome(error="unknown source encoding 'rot13': not a text encoding Python knows"),
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


CHUNK_SIZES = (7, 1 << 20)
"""Tiny chunks cut everywhere (a chunk of rejects only among them), big ones once."""


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(jobs, outputs, name: str, fmt: str) -> None:
    case = CASES[name]
    want = case.outcome(fmt)
    # Big inputs (10,000 columns, a 50 MB field) once, to stay quick.
    for chunk_bytes in CHUNK_SIZES if len(case.data) < 100_000 else CHUNK_SIZES[1:]:
        sink = jobs.tmp / "sink"
        for leftover in (sink, jobs.tmp / "state.json"):
            _remove(leftover)
        kind, result = _run(jobs, case, fmt, chunk_bytes)
        if want.error:
            assert (kind, result) == ("error", want.error.format(tmp=jobs.tmp))
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
        assert total == len(case.data) and manifest["bytes_unverified"] == 0
        assert (manifest["bytes_rejected"] > 0) == bool(want.rejects)
        parts = [c["part"] for c in manifest["chunks"] if c["part"]]
        assert sorted(p["path"] for p in parts) == sorted(p.name for p in sink.glob("part-*"))
        assert all(p["rows"] > 0 for p in parts), "a part without rows"
        if len(case.data) < 1 << 20:
            for reader, read in READERS.items():
                assert read(sink, fmt, header) == rows, reader


def _csv_dialect(case: Case) -> dict[str, str]:
    return {k: str(v) for k, v in case.dialect.items() if k in ("delimiter", "quote", "encoding")}


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def test_the_matrix_covers_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


DOC = Path(__file__).parents[3] / "docs" / "bad-input-matrix.md"


def render_matrix() -> str:
    """The matrix as docs/bad-input-matrix.md shows it: each case's expected outcome, which
    `test_bad_input` checks for every format and both chunk sizes."""
    lines = [
        "# Bad-input matrix",
        "",
        "What `collectjob-worker` does with odd CSV input, for each sink format: the rows it",
        "writes and the source lines it rejects (to `rejects/`), or the exact permanent error",
        "(the job fails, no `_SUCCESS`). Every case is run with 7-byte and 1 MiB chunks; the",
        "rows are compared with what Python's csv module reads and read back with pyarrow,",
        "pandas and DuckDB, and the manifest's byte counts add up to the source's size. A",
        "chunk whose records are all rejected writes no part file.",
        "",
        "Generated from `CASES` in `tests/unit/worker/test_bad_input_matrix.py`, which checks",
        "that this file matches; `" + DOC_DIR + "` stands for the job's directory.",
        "",
        "| case | input | " + " | ".join(FORMATS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in FORMATS) + " |",
    ]
    for name in sorted(CASES):
        case = CASES[name]
        cells = [name, case.describe(), *(case.outcome(fmt).render() for fmt in FORMATS)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def test_the_documented_matrix_is_the_tested_one() -> None:
    assert DOC.read_text() == render_matrix(), (
        "docs/bad-input-matrix.md is stale; write it again: "
        "PYTHONPATH=hack:tests .venv/bin/python tests/unit/worker/test_bad_input_matrix.py"
    )


if __name__ == "__main__":
    DOC.write_text(render_matrix())
