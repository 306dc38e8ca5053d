"""The CSV cases of the worker issue, each compared value by value with Python's csv module.

Every case runs through the whole pipeline (source file -> chunks -> parts -> manifest) in
every sink format, once with tiny chunks (many cuts, including inside quoted values' lines)
and once with one big chunk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from collectjob_worker.dialect import Dialect


@dataclass(frozen=True)
class Case:
    data: bytes
    delimiter: str = ","
    quote: str = '"'
    encoding: str = "utf-8"

    @property
    def dialect(self) -> Dialect:
        return Dialect(self.delimiter, self.quote, self.encoding)


LOSSLESS = (
    b"id,zip,big,na,null,empty,space,text\n"
    b'1,007,12345678901234567890123456789,NA,null,,"  padded  ",N/A\n'
    b'2,0,-0,nan,NULL,"",\t,None\n'
    b"3,00000,1e5,#N/A,None, , x ,TRUE\n"
)

CASES = {
    "rfc4180": Case(
        b'name,note,n\n"Smith, J","said ""hi""",1\n"multi\nline\nvalue",x,2\nplain,"",3\n'
    ),
    "crlf": Case(b'a,b\r\n1,"two\r\nlines"\r\n3,4\r\n'),
    "cr_only": Case(b"a,b\r1,2\r3,4\r"),
    "cr_only_quoted_cr": Case(b'a,b\r1,"x\ry"\r3,"p\r\nq"\r5,6'),
    "mixed_endings": Case(b"a,b\r\n1,2\n3,4\r5,6\r\n\r7,8\r"),
    "bom": Case(b'\xef\xbb\xbfid,name\r\n1,"\xc3\xa9t\xc3\xa9"\r\n2,x\r\n'),
    "semicolon_latin1": Case(
        "k;v\n1;'caf\xe9; cr\xe8me'\n2;'it''s'\n".encode("latin-1"), ";", "'", "latin-1"
    ),
    "tab": Case(b'a\tb\n1\t"x\ty"\n'),
    "lossless": Case(LOSSLESS),
    "no_final_newline": Case(b"a,b\n1,2\n3,4"),
    "blank_lines": Case(b"a,b\n1,2\n\n3,4\r\n\r\n5,6\n"),
    "single_column_blanks": Case(b'only\nx\n\n""\ny\n'),
    "wrong_field_counts": Case(b'a,b,c\n1,2,3\n4,5\n6,7,8,9\n10,11,12\n"x\ny",z\n'),
    "unterminated_quote": Case(b'a,b\n1,2\n3,"never closed\n4,5\n'),
    "stray_quotes": Case(b'size,dish\n12" pizza,"ab"c\n5",x\n'),
    "invalid_utf8": Case(b"a,b\n1,ok\n2,bad\xff\xfe\n3,ok\n"),
    "empty_file": Case(b""),
    "header_only": Case(b"a,b,c\n"),
    "header_only_no_newline": Case(b"a,b,c"),
}


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
@pytest.mark.parametrize("chunk_bytes", [7, 1 << 20])
@pytest.mark.parametrize("name", sorted(CASES))
def test_case_output_matches_source(jobs, outputs, name: str, fmt: str, chunk_bytes: int) -> None:
    case = CASES[name]
    source = jobs.write(case.data)
    pipeline = jobs.run(jobs.job(source, fmt=fmt, chunk_bytes=chunk_bytes, dialect=case.dialect))
    expected = outputs.expected(case.data, case.delimiter, case.quote, case.encoding)
    sink = jobs.tmp / "sink"

    assert outputs.values(sink, fmt, expected.header) == expected.rows
    rejects = outputs.rejects(sink, fmt)
    assert [int(r["line"]) for r in rejects] == expected.rejects
    assert all(r["reason"] for r in rejects)

    cp = pipeline.checkpoint
    assert cp.done and cp.offset == len(case.data) and cp.header == expected.header
    assert (cp.rows_processed, cp.rows_rejected) == (len(expected.rows), len(expected.rejects))
    manifest = json.loads((sink / "_manifest.json").read_text())
    assert manifest["rows"] == len(expected.rows)
    assert manifest["rejected"] == len(expected.rejects)
    assert (sink / "_SUCCESS").exists()


def test_csv_to_csv_keeps_the_source_bytes(jobs) -> None:
    """Leading zeros, long digits, NA, null, empty strings and whitespace survive byte for byte."""
    jobs.run(jobs.job(jobs.write(LOSSLESS)))
    assert (jobs.tmp / "sink" / "part-000000.csv").read_bytes() == LOSSLESS


def test_lossless_values_in_typed_formats(jobs, outputs) -> None:
    jobs.run(jobs.job(jobs.write(LOSSLESS), fmt="parquet"))
    _, rows = outputs.parts(jobs.tmp / "sink", "parquet")
    assert rows[0] == {
        "id": "1",
        "zip": "007",
        "big": "12345678901234567890123456789",
        "na": "NA",
        "null": "null",
        "empty": "",
        "space": "  padded  ",
        "text": "N/A",
    }
    assert rows[1]["empty"] == "" and rows[1]["space"] == "\t" and rows[2]["empty"] == " "


def test_reject_records_carry_line_reason_and_text(jobs, outputs) -> None:
    data = b'a,b\n1,2\n"multi\nline",x,extra\n3,4\n5,"open\n'
    jobs.run(jobs.job(jobs.write(data)))
    rejects = outputs.rejects(jobs.tmp / "sink", "csv")
    assert rejects == [
        {"line": "3", "reason": "expected 2 fields, found 3", "record": '"multi\nline",x,extra'},
        {
            "line": "6",
            "reason": "unterminated quoted field: the file ends inside a quoted value",
            "record": '5,"open',
        },
    ]


def test_no_header_names_columns_by_position(jobs, outputs) -> None:
    data = b"1,a\n2,b\n"
    jobs.run(jobs.job(jobs.write(data), dialect=Dialect(header=False), fmt="jsonl"))
    assert outputs.parts(jobs.tmp / "sink", "jsonl")[1] == [
        {"column_1": "1", "column_2": "a"},
        {"column_1": "2", "column_2": "b"},
    ]
