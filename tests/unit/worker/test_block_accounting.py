"""How a parsed block proves that every byte is a row, a reject or a blank line.

The cheap proof counts lines (every line ending ends a row or is inside a value); whenever it
cannot hold, the record scan decides. A block proven by the count never runs the scan
(`ParsedBlock.records` stays unset), and either way the bytes add up to the block's length.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from collectjob_worker import csvparse
from collectjob_worker.chunking import Block, count_lines
from collectjob_worker.csvparse import BlockParser, ParsedBlock
from collectjob_worker.dialect import Dialect


def _block(data: bytes) -> Block:
    """`data` as a block starting on line 2, after a header."""
    return Block(data, 0, 2, count_lines(data))


def _parse(data: bytes, header: tuple[str, ...] = ("a", "b")) -> tuple[ParsedBlock, int, int]:
    """Parse `data` as a block and account for it."""
    parsed = BlockParser(list(header), Dialect()).parse(_block(data))
    accepted, rejected = parsed.accounted(len(data), [])
    return parsed, accepted, rejected


@pytest.mark.parametrize(
    "data",
    [
        b'1,"two\nlines"\n3,"and\r\nthree\rlines"\n',
        b'"x\n\ny",1\n2,3',  # a blank line inside a value is not a blank line
        b"1,2\n3,4\n",
    ],
)
def test_values_spanning_lines_are_proven_by_counting_lines(data: bytes) -> None:
    parsed, accepted, rejected = _parse(data)
    assert parsed.clean and parsed.rows_cover_lines
    assert parsed.records is None, "the count alone proved the block; the scan ran"
    assert (accepted, rejected) == (len(data), 0)


def test_a_blank_line_between_multiline_records_is_found_and_accounted() -> None:
    data = b'1,"two\nlines"\n\n3,4\n'
    parsed, accepted, rejected = _parse(data)
    assert parsed.rows == 2
    assert not parsed.rows_cover_lines and not parsed.clean
    assert (accepted, rejected) == (len(data), 0)


def test_a_rejected_multiline_record_falls_back_to_the_scan() -> None:
    data = b'1,"two\nlines"\n"three\nlines",4,5\n6,7\n'
    parsed, accepted, rejected = _parse(data)
    assert parsed.rows == 2
    [reject] = parsed.rejects
    assert (reject.line, reject.reason) == (4, "expected 2 fields, found 3")
    assert (accepted, rejected) == (len(data) - reject.size, reject.size)


def test_a_cr_and_lf_split_between_two_values_undercounts_and_the_scan_decides() -> None:
    # In the column's buffer the values "x\r" and "\ny" touch and read as one CRLF.
    data = b'"x\r",1\n"\ny",2\n'
    parsed, accepted, rejected = _parse(data)
    assert parsed.rows == 2 and not parsed.rows_cover_lines
    assert parsed.table is not None and parsed.table.column("a").to_pylist() == ["x\r", "\ny"]
    assert (accepted, rejected) == (len(data), 0)


def test_a_single_column_keeps_blank_lines_as_empty_values() -> None:
    data = b'"a\nb"\n\nc\n'
    parsed, accepted, rejected = _parse(data, header=("only",))
    assert parsed.table is not None
    assert parsed.table.column("only").to_pylist() == ["a\nb", "", "c"]
    assert parsed.rows_cover_lines
    assert (accepted, rejected) == (len(data), 0)


def test_a_copy_learns_which_columns_span_lines() -> None:
    """A byte-exact copy converts only the first column, and the columns it has seen span
    lines. A block with line endings elsewhere is proven by the scan, the next one converts
    every column to learn which, and from then on the count proves the blocks."""
    parser = BlockParser(["a", "b", "c"], Dialect())

    def copy(data: bytes) -> ParsedBlock:
        parsed = parser.parse(_block(data), values=False)
        assert parsed.table is None, "values were not asked for"
        assert parsed.accounted(len(data), []) == (len(data), 0)
        return parsed

    in_b = b'1,"two\nlines",x\n3,4,y\n'
    assert copy(in_b).records is not None, "the first column cannot cover the lines"
    assert parser._copy_columns is None, "the next block converts every column"
    assert copy(in_b).records is None
    assert parser._copy_columns == ["c0", "c1"]
    assert copy(in_b).records is None, "the count proves it with the columns learnt"

    in_c = b'1,2,"three\nlines"\n'
    assert copy(in_c).records is not None, "a line ending in column c: the scan decides"
    assert copy(in_c).records is None
    assert parser._copy_columns == ["c0", "c1", "c2"]


def test_the_count_looks_first_in_the_columns_seen_to_span_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the line endings found cover the block's lines, the other columns cannot hold
    any (a value's line endings are the block's own), so they are not counted."""
    parser = BlockParser(["a", "b", "c"], Dialect())
    data = b'1,"two\nlines",x\n3,"four\nlines",y\n'
    assert parser.parse(_block(data)).rows_cover_lines
    counted: list[int] = []
    real = csvparse._line_ends_in

    def spy(array: pa.Array, crs: bool) -> int:
        counted.append(len(array))
        return real(array, crs)

    monkeypatch.setattr(csvparse, "_line_ends_in", spy)
    parsed = parser.parse(_block(data))
    assert parsed.rows_cover_lines and parsed.records is None
    assert len(counted) == 1, "only column b, learnt from the first block, was counted"
    assert parsed.accounted(len(data), []) == (len(data), 0)


@pytest.mark.parametrize("first", [(), ("c0",), ("c1",), ("c0", "c1")])
def test_a_skipped_line_fails_the_count_whichever_columns_come_first(
    first: tuple[str, ...],
) -> None:
    data = b'1,"two\nlines"\n\n3,4\n'
    table = pacsv.read_csv(
        pa.BufferReader(data),
        read_options=pacsv.ReadOptions(column_names=["c0", "c1"]),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(column_types={"c0": pa.string(), "c1": pa.string()}),
    )
    assert table.num_rows == 2, "pyarrow skipped the blank line"
    assert csvparse._spanning_columns(table, data, count_lines(data), True, first) is None
    without_blank = data.replace(b"\n\n", b"\n")
    assert csvparse._spanning_columns(
        table, without_blank, count_lines(without_blank), True, first
    ) == {"c1"}


@pytest.mark.parametrize(
    ("data", "ascii"),
    [(b"", True), (b"a,\x7f\n", True), (b"a,\x80\n", False), (b"x" * 70000 + b"\xc3\xa9", False)],
)
def test_only_ascii_blocks_skip_pyarrows_utf8_check(data: bytes, ascii: bool) -> None:
    assert csvparse._ascii(data) is ascii


def test_a_byte_that_is_not_utf8_at_a_blocks_very_end_is_rejected() -> None:
    data = b"1,ok\n" * 1000 + b"2,caf\xc3\xa9\n3,bad\xff"
    parsed, accepted, rejected = _parse(data)
    assert parsed.table is not None
    assert parsed.table.column("b").to_pylist()[-1] == "café"
    assert [r.line for r in parsed.rejects] == [2 + 1001]
    assert "not valid utf-8" in parsed.rejects[0].reason
    assert rejected == len(b"3,bad\xff") and accepted + rejected == len(data)
