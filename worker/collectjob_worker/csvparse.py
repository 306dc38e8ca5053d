"""Lossless parsing of a block of whole CSV records into string columns.

Every value stays the string it is in the source: no type inference, no NA detection
(`NA`, `null` and empty stay strings), no whitespace trimming. That is pyarrow's CSV reader
with string column types, no null values and strings that can never be null.

Records with the wrong number of fields, records that do not decode in the source encoding
and a record left open by an unterminated quote at end of file become rejects, each with its
source line number and the reason. A blank line is not a record when there are several
columns (as in pandas and Python's csv.DictReader); with a single column it is an empty value.
Lines end in LF, CRLF or a lone CR, in any mix (pyarrow reads all three, as does the scan).

Conservation. Every byte of a block belongs to an accepted row, a reject or a blank line
(counted as accepted: it separates rows and carries no value). `ParsedBlock.accounted` proves
it for each block, in one of two ways:
- by counting lines: every line ending of the block is inside one of pyarrow's values or ends
  one of its rows (`_spanning_columns`). A row skipped or rejected, or a blank line, leaves a
  line ending over, so the count then fails, and the proof falls back to
- matching pyarrow's rows and invalid rows to the records of an independent boundary scan.
A block that cannot be matched is an error (Unaccounted), never a success. The count costs a
byte comparison over the values; the scan follows every quote, three times as long as
pyarrow's parse of a block of quoted values, so it runs only when something is amiss.

When the values are not needed (csv to csv with no transform and an RFC 4180 source), the
rows are validated and counted, and the output is the source's own bytes for the accepted
records, so every value survives byte for byte. Only the first column is converted then,
plus the columns whose values were seen to span lines: the line count needs their line
endings, and converting them costs less than the scan (on the bench file: all 7 columns
0.48 s, the first alone 0.33 s, the scan 0.65 s). A block whose lines the converted columns
do not cover is proven by the scan, and the next one converts every column to learn which.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from collectjob_worker.arrowstrings import value_bytes
from collectjob_worker.chunking import (
    CR,
    LF,
    Block,
    Quoting,
    boundaries,
    count_line_ends,
    line_ends,
)
from collectjob_worker.dialect import Dialect
from collectjob_worker.errors import PermanentError

_BLANK_LINE = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\n|\r)")


class Unaccounted(PermanentError):
    """Some bytes of a block ended up in neither a row nor a reject: a bug, never a success."""


@dataclass(frozen=True)
class Reject:
    line: int
    reason: str
    record: str
    size: int
    """Source bytes of the rejected record, for the conservation check."""


@dataclass(frozen=True)
class _Records:
    """Where each record of a block lies and the source line it starts on, in parse order."""

    data: bytes
    starts: np.ndarray
    ends: np.ndarray
    first_line: int
    """Source line of data[0]."""
    encoding: str
    blank: int = 0
    """Bytes of blank lines between the records, which are not records."""
    known_lines: np.ndarray | None = field(default=None, repr=False)
    """The line of each record when `data` is not contiguous source (a subset)."""

    def __len__(self) -> int:
        return int(self.starts.size)

    @functools.cached_property
    def lines(self) -> np.ndarray:
        """Only rejects need lines, so they are counted when first asked for."""
        if self.known_lines is not None:
            return self.known_lines
        a = np.frombuffer(self.data, np.uint8)
        return np.asarray(np.searchsorted(line_ends(a), self.starts), np.int64) + self.first_line

    def raw(self, k: int) -> bytes:
        return self.data[int(self.starts[k]) : int(self.ends[k])]

    def text(self, k: int) -> str:
        raw = self.raw(k)
        raw = raw[:-1] if raw.endswith(b"\n") else raw
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        return raw.decode(self.encoding, errors="replace")

    def size(self, k: int) -> int:
        return int(self.ends[k] - self.starts[k])

    @property
    def sizes(self) -> np.ndarray:
        return self.ends - self.starts

    def line(self, k: int) -> int:
        return int(self.lines[k])

    def subset(self, keep: np.ndarray) -> _Records:
        """The kept records, re-packed into new data whose lines still refer to the source."""
        pieces = [self.raw(int(k)) for k in keep]
        sizes = np.fromiter((len(p) for p in pieces), np.int64, len(pieces))
        ends = np.cumsum(sizes)
        return _Records(
            b"".join(pieces),
            ends - sizes,
            ends,
            self.first_line,
            self.encoding,
            self.blank,
            self.lines[keep],
        )

    @classmethod
    def empty(cls) -> _Records:
        nothing = np.zeros(0, np.int64)
        return cls(b"", nothing, nothing, 1, "utf-8", known_lines=nothing)

    @classmethod
    def scan(cls, block: Block, quoting: Quoting, skip_blank: bool, encoding: str) -> _Records:
        data = block.data
        ends = boundaries(data, 0, len(data), quoting)
        if not ends.size or ends[-1] != len(data):
            ends = np.append(ends, len(data))
        starts = np.r_[0, ends[:-1]]
        blank = 0
        if skip_blank:
            a = np.frombuffer(data, np.uint8)
            body = ends - starts
            last = a[np.maximum(ends - 1, 0)]
            body -= (last == LF) | (last == CR)
            body -= (last == LF) & (a[np.maximum(ends - 2, 0)] == CR) & (ends - starts >= 2)
            keep = body > 0
            blank = int((ends - starts)[~keep].sum())
            starts, ends = starts[keep], ends[keep]
        return cls(data, starts, ends, block.line, encoding, blank)


@dataclass
class ParsedBlock:
    """The rows of one block (as a string table when values were asked for) and its rejects."""

    line: int
    rows: int
    table: pa.Table | None
    rejects: list[Reject]
    raw: bytes = field(repr=False)
    clean: bool
    """Every record became a row: `raw` holds exactly the accepted rows, as in the source."""
    rows_cover_lines: bool
    """Every line ending of `raw` ends a row or is inside a value (so every byte belongs to a
    row, and no line was skipped)."""
    scan: Callable[[], _Records] = field(repr=False)
    records: _Records | None = None
    row_records: np.ndarray | None = None
    """Index into `records` of each row, once known."""

    def _mapped(self) -> tuple[_Records, np.ndarray] | None:
        """The records and the record of each row, if rows and records can be matched."""
        if self.records is None:
            records = self.scan()
            if len(records) == self.rows:
                self.records, self.row_records = records, np.arange(len(records))
        if self.records is None or self.row_records is None:
            return None
        return self.records, self.row_records

    def row_source(self, row: int) -> Reject:
        """A reject for a row refused after parsing (by a transform), without its reason."""
        mapped = self._mapped()
        if mapped is None:
            return Reject(self.line, "", "", 0)
        records, rows = mapped
        k = int(rows[row])
        return Reject(records.line(k), "", records.text(k), records.size(k))

    def accounted(self, length: int, dropped: list[Reject]) -> tuple[int, int]:
        """Accepted and rejected bytes of this block of `length` source bytes, given the rows
        `dropped` by a transform. Raises Unaccounted unless they add up to `length`."""
        rejected = sum(r.size for r in self.rejects) + sum(r.size for r in dropped)
        if self.clean and self.rows_cover_lines and not self.rejects:
            accepted = length - rejected
        else:
            mapped = self._mapped()
            if mapped is None or len(mapped[1]) != self.rows:
                raise Unaccounted(
                    f"{self.rows} rows and {len(self.rejects)} rejects do not match the "
                    f"records from line {self.line}"
                )
            records, rows = mapped
            accepted = int(records.sizes[rows].sum()) + records.blank - sum(r.size for r in dropped)
        if accepted + rejected != length:
            raise Unaccounted(
                f"{accepted} accepted and {rejected} rejected bytes from line {self.line} do "
                f"not add up to the block's {length} bytes"
            )
        return accepted, rejected


class BlockParser:
    """Parses the blocks of one source: knows its header and dialect."""

    def __init__(self, header: list[str], dialect: Dialect) -> None:
        self.header = header
        self.dialect = dialect
        self.quoting = Quoting(dialect.delimiter_byte, dialect.quote_byte)
        self.skip_blank = len(header) > 1
        self._names = [f"c{i}" for i in range(len(header))]
        self.schema = pa.schema([pa.field(name, pa.string(), nullable=False) for name in header])
        """The parser never makes a null (`strings_can_be_null=False`), so every column is
        required: Parquet then writes no definition levels (11% less encoding on the bench
        file)."""
        self._spanning: frozenset[str] = frozenset()
        """Columns whose values were seen to span lines: a copy converts them too, and the
        line count looks in them first."""
        self._learning = False
        """A copy's block had lines its converted columns did not cover: the next converts
        every column, to learn which span lines. Several parser threads may set and read
        these at once; a block's result is the same either way, only its cost differs."""

    def parse(self, block: Block, *, values: bool = True) -> ParsedBlock:
        """Parse a block; with values=False only validate and count (for a byte-exact copy)."""
        if block.unterminated:
            records = _Records.scan(block, self.quoting, False, self.dialect.encoding)
            reason = "unterminated quoted field: the file ends inside a quoted value"
            reject = Reject(block.line, reason, records.text(0), len(block.data))
            return self._empty(block.line, [reject])
        valid_utf8 = self.dialect.is_utf8 and _ascii(block.data)
        if not values and self.dialect.is_utf8 and not valid_utf8:
            if not _decodes(block.data):
                return self._parse_undecodable(block, values)
            valid_utf8 = True
        try:
            return self._parse_records(
                block.line,
                block.data,
                values,
                functools.cache(functools.partial(self._scan, block)),
                valid_utf8,
                block.newlines,
                block.crs,
            )
        except (pa.ArrowInvalid, UnicodeDecodeError) as e:
            # pyarrow also fails (without saying UTF) when an invalid row it reports to the
            # handler does not decode.
            undecodable = self.dialect.is_utf8 and not _is_utf8(block.data)
            if "UTF" not in str(e) and not isinstance(e, UnicodeDecodeError) and not undecodable:
                raise
            return self._parse_undecodable(block, values)

    def _scan(self, block: Block) -> _Records:
        return _Records.scan(block, self.quoting, self.skip_blank, self.dialect.encoding)

    def _table(self, table: pa.Table) -> pa.Table:
        return pa.Table.from_arrays(table.columns, schema=self.schema)

    def _empty(self, line: int, rejects: list[Reject]) -> ParsedBlock:
        empty = [pa.nulls(0, pa.string()) for _ in self._names]
        table = self._table(pa.Table.from_arrays(empty, names=self._names))
        return ParsedBlock(line, 0, table, rejects, b"", False, True, lambda: _Records.empty())

    def _parse_undecodable(self, block: Block, values: bool) -> ParsedBlock:
        """Slow path: reject the records that do not decode, then parse the others."""
        records = self._scan(block)
        good, rejects = [], []
        for k in range(len(records)):
            try:
                records.raw(k).decode(self.dialect.encoding)
                good.append(k)
            except UnicodeDecodeError as e:
                reason = f"not valid {self.dialect.encoding} at byte {e.start} of the record"
                rejects.append(Reject(records.line(k), reason, records.text(k), records.size(k)))
        kept = records.subset(np.asarray(good, np.int64))
        if not len(kept):
            empty = self._empty(block.line, rejects)
            empty.records, empty.row_records = kept, np.zeros(0, np.int64)
            return empty
        parsed = self._parse_records(
            block.line, kept.data, values, lambda: kept, self.dialect.is_utf8, None
        )
        parsed.rejects = sorted(rejects + parsed.rejects, key=lambda r: r.line)
        parsed.clean = False
        return parsed

    def _parse_records(
        self,
        line: int,
        data: bytes,
        values: bool,
        scan: Callable[[], _Records],
        valid_utf8: bool,
        newlines: int | None,
        crs: bool = True,
    ) -> ParsedBlock:
        """`scan()` returns the block's records; it may be called more than once (it is cached
        or cheap), and only when records span lines or some are not rows. `valid_utf8`: the
        caller knows `data` to be UTF-8 (ASCII, or decoded), so pyarrow need not check it
        again, which costs 15% of the parse."""
        invalid: list[_Invalid] = []

        def on_invalid(row: pacsv.InvalidRow) -> str:
            invalid.append(_Invalid(row.number or 0, row.actual_columns, row.text))
            return "skip"

        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(
                column_names=self._names,
                use_threads=False,
                # One pyarrow block per call (a record may never straddle two). Transcoding to
                # UTF-8 can triple the size, and pyarrow mishandles a transcoded input that
                # spans blocks.
                block_size=(len(data) if self.dialect.is_utf8 else 4 * len(data)) + 1,
                encoding=self.dialect.arrow_encoding,
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=self.dialect.delimiter,
                quote_char=self.dialect.quote,
                double_quote=True,
                escape_char=False,
                newlines_in_values=True,
                ignore_empty_lines=self.skip_blank,
                invalid_row_handler=on_invalid,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in self._names},
                include_columns=None if values else self._copy_columns,
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                check_utf8=not valid_utf8,
            ),
        )
        spanning = (
            None
            if newlines is None
            else _spanning_columns(table, data, newlines, crs, first=self._spanning)
        )
        covered = spanning is not None
        self._learn(table, spanning)
        # Whether the block holds blank lines, which a byte-exact copy must not carry over.
        # (With one column a blank line is an empty value, which a copy must spell out as "".)
        # Lines all covered by rows leave no room for one; otherwise the scan knows.
        if self.skip_blank and not covered:
            blank = scan().blank > 0
        else:
            blank = not self.skip_blank and _has_blank_line(data)
        parsed = ParsedBlock(
            line,
            table.num_rows,
            self._table(table) if values else None,
            [],
            data,
            not invalid and not blank,
            covered,
            scan,
        )
        if invalid or blank:
            self._locate(parsed, scan(), invalid)
        return parsed

    @property
    def _copy_columns(self) -> list[str] | None:
        """What a copy converts: every column while learning, else the first and those seen
        to span lines."""
        if self._learning:
            return None
        return [n for i, n in enumerate(self._names) if i == 0 or n in self._spanning]

    def _learn(self, table: pa.Table, spanning: set[str] | None) -> None:
        """After any block: `spanning` is what `_spanning_columns` found in `table`. Lines
        left over call for every column in a copy's next block; only a block with every
        column converted and its lines covered tells which columns span lines, which a copy
        then converts and the line count looks in first."""
        if spanning is None:
            self._learning = True
        elif table.num_columns == len(self._names):
            self._spanning = self._spanning | spanning
            self._learning = False

    def _locate(self, parsed: ParsedBlock, records: _Records, invalid: list[_Invalid]) -> None:
        """Turn pyarrow's invalid rows (numbered among records) into rejects with lines.

        Both number records the same way (the scan finds the line endings pyarrow does); if
        they ever disagree the block cannot be accounted for, which is an error.
        """
        expected = len(self.header)
        skipped = np.asarray([bad.number - 1 for bad in invalid], np.int64)
        rows = np.setdiff1d(np.arange(len(records)), skipped)
        if rows.size != parsed.rows or (skipped.size and skipped.max() >= len(records)):
            raise Unaccounted(
                f"{parsed.rows} rows and {len(invalid)} invalid records do not match the "
                f"{len(records)} records from line {parsed.line}"
            )
        parsed.rejects = [
            Reject(
                records.line(int(k)),
                f"expected {expected} fields, found {bad.fields}",
                records.text(int(k)),
                records.size(int(k)),
            )
            for k, bad in zip(skipped, invalid, strict=True)
        ]
        parsed.records, parsed.row_records = records, rows


@dataclass(frozen=True)
class _Invalid:
    number: int
    fields: int
    text: str


def _spanning_columns(
    table: pa.Table, data: bytes, newlines: int, crs: bool, first: Collection[str] = ()
) -> set[str] | None:
    """The columns of `table` whose values hold line endings, if each of the block's lines
    ends a row or is inside one of its values; None if a line is left over.

    Each row takes one line ending of its own (the last row may end with the data instead)
    plus those inside its values; a blank line pyarrow skipped, or an invalid row, takes some
    and leaves no row. So rows + line endings in values equal the block's lines exactly when
    no line was skipped. The values are counted in each column's data buffer, where two values
    side by side may join a CR and an LF into one CRLF: that undercounts, which can only fail
    the equality, never make it hold by accident. Without a CR in `data` (`crs`), only LFs
    are counted.

    The columns in `first` (those seen to span lines before) are counted first, and the count
    stops once it reaches the block's lines: a value's line endings are line endings of the
    block, distinct from each other and from those that end rows, so the columns not yet
    counted cannot hold any. On the bench file two columns of seven hold line endings (40% of
    the values' bytes); counting them alone took the count from 0.060 s of CPU to 0.035 s."""
    lines = newlines + (not data.endswith((b"\n", b"\r")))
    if table.num_rows >= lines:
        return set() if table.num_rows == lines else None
    left = lines - table.num_rows
    spanning = set()
    for name in sorted(table.column_names, key=lambda name: name not in first):
        if left <= 0:
            break
        count = sum(_line_ends_in(array, crs) for array in table.column(name).chunks)
        if count:
            spanning.add(name)
            left -= count
    return spanning if left == 0 else None


def _line_ends_in(array: pa.Array, crs: bool) -> int:
    """Line endings in the values of a string array, parsed from bytes that hold a CR if
    `crs` (see `_spanning_columns` for a CRLF split between two values)."""
    return count_line_ends(value_bytes(array), crs)


def _has_blank_line(data: bytes) -> bool:
    """Whether a block may hold a blank line (perhaps inside a quoted value)."""
    return data[:1] in (b"\n", b"\r") or _BLANK_LINE.search(data) is not None


def _ascii(data: bytes) -> bool:
    """Whether every byte is below 0x80. numpy's vectorised maximum takes half the time of
    `bytes.isascii` (0.012 s against 0.024 s over the bench file), which pays for the few
    blocks that are not ASCII, where isascii stops at the first such byte."""
    return not data or int(np.frombuffer(data, np.uint8).max()) < 0x80


def _is_utf8(data: bytes) -> bool:
    return _ascii(data) or _decodes(data)


def _decodes(data: bytes) -> bool:
    """Whether `data` is valid UTF-8 (for bytes already known not to be ASCII alone)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
