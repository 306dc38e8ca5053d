"""Chunk cuts never split a record, whatever the window and read size, and are deterministic."""

from __future__ import annotations

import csv
import io
import itertools
import random
from collections.abc import Callable

import pytest

from collectjob_worker.chunking import (
    Block,
    Quoting,
    boundaries,
    count_lines,
    in_quotes,
    iter_chunk,
    last_boundary,
    tail_boundary,
)

TRICKY = ["", " ", "a,b", 'x"y', "l1\nl2", "cr\r\nlf", '"', '""', "007", "NA", "  pad  ", "é,\n"]


def _rfc_csv(rng: random.Random, rows: int, lineterminator: str) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=lineterminator)
    for _ in range(rows):
        writer.writerow([rng.choice(TRICKY) for _ in range(3)])
    return out.getvalue().encode()


def _stray_quote_csv(rng: random.Random, rows: int) -> bytes:
    """Lenient input: literal quotes inside unquoted fields and text after a closing quote."""
    fields = ['12" pizza', '"ab"c', "x", '"q,\n"', '5"', '""', '"a""b"']
    return "".join(
        ",".join(rng.choice(fields) for _ in range(3)) + "\n" for _ in range(rows)
    ).encode()


def _records(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline="")))


def _chunk(
    read: Callable[[int, int], bytes],
    size: int,
    offset: int,
    line: int,
    window: int,
    block_bytes: int,
    reread: bool,
) -> list[Block]:
    """One chunk's blocks, as iter_chunk yields them."""
    blocks = list(
        iter_chunk(
            read,
            offset=offset,
            line=line,
            window=window,
            size=size,
            block_bytes=block_bytes,
            quoting=Quoting(),
            reread=reread,
        )
    )
    assert blocks and blocks[0].offset == offset
    return blocks


def _chunks(data: bytes, window: int, block_bytes: int, reread: bool) -> list[list[Block]]:
    """The whole of `data` cut into chunks, each chunk's blocks as iter_chunk yields them."""
    chunks: list[list[Block]] = []
    offset, line = 0, 1

    def read(start: int, n: int) -> bytes:
        return data[start : start + n]

    while offset < len(data):
        chunks.append(_chunk(read, len(data), offset, line, window, block_bytes, reread))
        offset, line = chunks[-1][-1].end, chunks[-1][-1].end_line
    return chunks


def _chunked(
    data: bytes, window: int, block_bytes: int, reread: bool = False
) -> tuple[list[list[str]], list[int]]:
    rows: list[list[str]] = []
    ends: list[int] = []
    for blocks in _chunks(data, window, block_bytes, reread):
        for prev, nxt in itertools.pairwise(blocks):
            assert prev.end == nxt.offset and prev.end_line == nxt.line
        for block in blocks:
            assert count_lines(data[: block.offset]) + 1 == block.line
            rows.extend(_records(block.data))
        ends.append(blocks[-1].end)
    return rows, ends


@pytest.mark.parametrize("seed", range(12))
def test_cuts_never_split_a_record(seed: int) -> None:
    rng = random.Random(seed)
    maker = rng.choice(["lf", "crlf", "stray"])
    if maker == "stray":
        data = _stray_quote_csv(rng, 300)
    else:
        data = _rfc_csv(rng, 300, "\n" if maker == "lf" else "\r\n")
    window = rng.choice([1, 7, 64, 500, 4096])
    rows, ends = _chunked(data, window, rng.choice([1, 3, 50, 1000, 1 << 20]))
    assert rows == _records(data)
    rows_again, ends_again = _chunked(data, window, rng.choice([2, 17, 333, 1 << 16]))
    assert rows_again == rows and ends == ends_again, "the cut must not depend on the read size"
    rows_reread, ends_reread = _chunked(data, window, rng.choice([2, 17, 333, 1 << 16]), True)
    assert rows_reread == rows and ends_reread == ends, "nor on reading records again"


@pytest.mark.parametrize("seed", range(12))
def test_a_block_ends_where_it_would_without_looking_at_the_tail_first(
    monkeypatch, seed: int
) -> None:
    """`iter_chunk(reread=True)` first looks for a read's last boundary in its tail alone; the
    blocks must be the same as when it reads the whole of each read."""
    from collectjob_worker import chunking

    rng = random.Random(300 + seed)
    maker = rng.choice(["lf", "crlf", "cr", "stray"])
    if maker == "stray":
        data = _stray_quote_csv(rng, 300)
    else:
        data = _rfc_csv(rng, 300, {"lf": "\n", "crlf": "\r\n", "cr": "\r"}[maker])
    window, block_bytes = rng.choice([64, 500, 4096, len(data)]), rng.choice([40, 333, 2000])

    def blocks() -> list[tuple[bytes, int, int]]:
        chunks = _chunks(data, window, block_bytes, reread=True)
        return [(b.data, b.offset, b.line) for blocks in chunks for b in blocks]

    monkeypatch.setattr(chunking, "_TAIL_BYTES", len(data) + 1)
    whole = blocks()
    for tail in (1, 3, 16, 64):
        monkeypatch.setattr(chunking, "_TAIL_BYTES", tail)
        assert blocks() == whole, f"tail of {tail} bytes"
    assert b"".join(b for b, _, _ in whole) == data


def test_a_tail_without_a_reset_tells_nothing() -> None:
    q = Quoting()
    assert tail_boundary(b'x\n"a,b\nc",d\ne', q) == len(b'x\n"a,b\nc",d\n')
    assert tail_boundary(b'a\n"b\nc\n', q) is None, "no reset: the quote may open or close"
    assert tail_boundary(b"abc", q) is None, "no line ending at all"


def test_a_source_that_rereads_cheaply_gives_blocks_as_read_not_copied() -> None:
    data = b"".join(b'%d,"a\nb",c\n' % i for i in range(200))
    returned: list[bytes] = []

    def read(offset: int, n: int) -> bytes:
        returned.append(bytes(data[offset : offset + n]))
        return returned[-1]

    blocks = list(
        iter_chunk(
            read,
            offset=0,
            line=1,
            window=len(data),
            size=len(data),
            block_bytes=100,
            quoting=Quoting(),
            reread=True,
        )
    )
    assert b"".join(b.data for b in blocks) == data
    assert len(blocks) > 10
    assert all(any(b.data is r for r in returned) for b in blocks)


@pytest.mark.parametrize("seed", range(6))
def test_lookback_agrees_with_vectorised_scan(seed: int) -> None:
    rng = random.Random(100 + seed)
    data = _stray_quote_csv(rng, 50) if seed % 2 else _rfc_csv(rng, 50, "\n")
    q = Quoting()
    found = set(boundaries(data, 0, len(data), q).tolist())
    for p in range(len(data)):
        if data[p] == ord("\n"):
            assert (not in_quotes(data, 0, p, q)) == (p + 1 in found), p
    assert last_boundary(data, 0, len(data), q) == max(found)


def test_many_quoted_newlines_fall_back_to_the_vectorised_scan() -> None:
    value = "\n".join(f'line {i} ""quoted""' for i in range(500))
    data = f'a,"{value}"\nb,c\n"{value}",d\n'.encode()
    q = Quoting()
    assert boundaries(data, 0, len(data), q).tolist() == [
        data.index(b"\nb,c") + 1,
        data.index(b"b,c\n") + 4,
        len(data),
    ]
    assert last_boundary(data, 0, len(data) - 1, q) == data.index(b"b,c\n") + 4


def test_unterminated_quote_at_end_of_file_is_its_own_block() -> None:
    data = b'a,b\n1,2\n3,"never closed\n4,5\n'
    blocks = list(
        iter_chunk(
            lambda o, n: data[o : o + n],
            offset=0,
            line=1,
            window=1 << 20,
            size=len(data),
            block_bytes=1 << 20,
            quoting=Quoting(),
        )
    )
    assert [(b.data, b.line, b.unterminated) for b in blocks] == [
        (b"a,b\n1,2\n", 1, False),
        (b'3,"never closed\n4,5\n', 3, True),
    ]


def test_record_longer_than_the_window_extends_the_chunk() -> None:
    data = b'"' + b"x\n" * 100 + b'",1\nnext,2\n'
    blocks = list(
        iter_chunk(
            lambda o, n: data[o : o + n],
            offset=0,
            line=1,
            window=10,
            size=len(data),
            block_bytes=16,
            quoting=Quoting(),
        )
    )
    assert len(blocks) == 1 and blocks[0].data == data[: data.index(b"next")]


def test_other_delimiter_and_quote() -> None:
    q = Quoting(delimiter=ord(";"), quote=ord("'"))
    data = b"a;'x\n;y'\nb;c\n"
    assert boundaries(data, 0, len(data), q).tolist() == [9, len(data)]


@pytest.mark.parametrize("seed", range(6))
def test_sliced_scan_agrees_with_one_slice(monkeypatch, seed: int) -> None:
    """The vectorised scan goes slice by slice (bounded memory); slices change nothing."""
    from collectjob_worker import chunking

    rng = random.Random(200 + seed)
    data = _stray_quote_csv(rng, 80) if seed % 2 else _rfc_csv(rng, 80, rng.choice(["\n", "\r"]))
    q = Quoting()
    whole = boundaries(data, 0, len(data), q).tolist()
    for size in (1, 2, 7, 64):
        monkeypatch.setattr(chunking, "_SLICE_BYTES", size)
        assert boundaries(data, 0, len(data), q).tolist() == whole


def test_cr_only_records_and_an_undecided_cr_at_the_window_end() -> None:
    data = b"a,b\r1,2\r3,4\r"
    q = Quoting()
    assert boundaries(data, 0, len(data), q).tolist() == [4, 8, 12]
    assert last_boundary(data, 0, 8, q, final=False) == 8
    assert last_boundary(data[:8], 0, 8, q, final=False) == 4, "the CR at the end is undecided"
    rows, _ = _chunked(data, 3, 1)
    assert rows == [["a", "b"], ["1", "2"], ["3", "4"]]


@pytest.mark.parametrize("reread", [False, True])
def test_a_chunk_reads_a_short_first_block_then_whole_blocks_and_cuts_the_same(
    monkeypatch, reread: bool
) -> None:
    """A resumed run's first rows wait for one short read, not a whole block: each chunk's
    first read is at most FIRST_READ_BYTES, the reads after it block_bytes again (a record
    longer than the first read is read in whole blocks, not in short pieces), and neither
    moves a cut."""
    from collectjob_worker import chunking

    long_first = b'0,"' + b"x" * 300 + b'",y\n'
    data = long_first + b"".join(b'%d,"a\nb",c\n' % i for i in range(2000))
    window, block_bytes = 5000, 1000
    monkeypatch.setattr(chunking, "FIRST_READ_BYTES", 1 << 30)
    as_before = [blocks[-1].end for blocks in _chunks(data, window, block_bytes, reread)]
    monkeypatch.setattr(chunking, "FIRST_READ_BYTES", 100)
    reads: list[tuple[int, int]] = []

    def read(offset: int, n: int) -> bytes:
        reads.append((offset, n))
        return data[offset : offset + n]

    offset, line, cuts = 0, 1, []
    while offset < len(data):
        reads.clear()
        blocks = _chunk(read, len(data), offset, line, window, block_bytes, reread)
        assert reads[0] == (offset, min(100, len(data) - offset))
        if offset == 0:
            assert blocks[0].data.startswith(long_first)
            assert reads[1] == (100, block_bytes), "the long record is read a block at a time"
        else:
            assert len(blocks[0].data) <= 100
        cuts.append(blocks[-1].end)
        offset, line = blocks[-1].end, blocks[-1].end_line
    assert cuts == as_before
