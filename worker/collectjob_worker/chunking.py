"""Record boundaries in raw CSV bytes, and deterministic chunk cuts.

A record ends at a line ending outside quotes: LF, CRLF or a lone CR, in any mix, as Python's
csv module and pyarrow read them. A CR is a line ending of its own only when the byte after it
is known and is not LF (or the file ends there), so a buffer that ends in CR leaves that CR
undecided until the next byte is read. Whether a byte is inside quotes depends only on
the bytes before it, starting from a record boundary, through this state machine over *runs*
of consecutive quote characters (it agrees with pyarrow's and Python's CSV parsers, including
their lenient handling of stray quotes such as `12" pizza`):

- an odd run at the start of a field (after a delimiter, CR, LF or at a record start) toggles
  the state: it opens a quoted field, or closes one that ends in a delimiter/newline;
- an odd run anywhere else closes an open quoted field or is a literal, so it resets the state
  to "outside";
- an even run is escaped quotes or an empty quoted field and changes nothing.

So the state at any position is the parity of the toggles since the last reset. Resets are
common (every `..."` closing a value), so finding the last boundary of a block usually looks
back only a few quotes; if it has to look further, a vectorised numpy pass over the whole
block takes over.

A chunk is cut deterministically from `(offset, window)` alone: it ends at the last boundary
at or before `offset + window` (a CR in the window's last byte is left undecided), or, if a
single record is longer than the window, at the first boundary after it; the end of the file
counts as a boundary. So redoing an uncommitted chunk after a crash cuts exactly the same
bytes, whatever the block size used to read them.

Memory. No record may be longer than `max_record` bytes: the reader never holds more than
that much of one record (plus one read) and fails with a permanent error naming the record's
line instead, so an unterminated quote or a file without newlines cannot exhaust memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from collectjob_api.contract import DEFAULT_MAX_RECORD_BYTES
from collectjob_worker.errors import PermanentError

LF = 0x0A
CR = 0x0D
Buf = bytes | bytearray
_LOOKBACK_RUNS = 64
_LOOKBACK_NEWLINES = 64
_TAIL_BYTES = 64 << 10
"""How much of a read `iter_chunk(reread=True)` looks at first to find its last boundary."""
FIRST_READ_BYTES = 256 << 10
"""The first read of a chunk, and so its first block, is at most this long, so that a resumed
run has its first rows at once: the bench's first row at resume took 22-66 ms with a 2 MiB
first block (a local file's), 7-13 ms with this; the throughput was the same within noise.
For a network source it is one short request more per chunk."""


@dataclass(frozen=True)
class Quoting:
    """The two bytes the state machine looks at."""

    delimiter: int = ord(",")
    quote: int = ord('"')


def _state_by_lookback(
    buf: Buf, start: int, pos: int, q: Quoting, anchored: bool = True
) -> bool | None:
    """Whether `pos` is inside quotes, walking back to the last reset; None if that is too far.

    `anchored`: a record starts at `start`. If not, only a reset tells the state, since what
    came before `start` is unknown: reaching `start` without one gives None."""
    quote = bytes((q.quote,))
    toggles = 0
    i = pos
    for _ in range(_LOOKBACK_RUNS):
        j = buf.rfind(quote, start, i)
        if j < 0:
            return bool(toggles & 1) if anchored else None
        k = j
        while k > start and buf[k - 1] == q.quote:
            k -= 1
        if k == start and not anchored:
            return None
        if (j - k + 1) & 1:
            if k == start or buf[k - 1] in (q.delimiter, LF, CR):
                toggles += 1
            else:
                return bool(toggles & 1)
        i = k
    return None


def _run_states(
    a: np.ndarray, q: Quoting, initial: bool = False, before: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Start of each quote run in `a`, and whether the state is "inside" right after it.

    `initial` is the state before a[0] and `before` the byte before it (None: a record
    starts at a[0])."""
    qpos = np.flatnonzero(a == q.quote)
    if qpos.size == 0:
        return qpos, qpos.astype(bool)
    breaks = np.flatnonzero(np.diff(qpos) != 1)
    starts = qpos[np.r_[0, breaks + 1]]
    ends = qpos[np.r_[breaks, qpos.size - 1]]
    odd = ((ends - starts + 1) & 1).astype(bool)
    prev = a[np.maximum(starts - 1, 0)]
    field_start = before is None or before in (q.delimiter, LF, CR)
    at_field_start = ((starts == 0) & field_start) | (
        (starts > 0) & ((prev == q.delimiter) | (prev == LF) | (prev == CR))
    )
    toggles = np.cumsum(odd & at_field_start)
    reset = odd & ~at_field_start
    last_reset = np.maximum.accumulate(np.where(reset, np.arange(starts.size), -1))
    base = np.where(last_reset >= 0, toggles[np.maximum(last_reset, 0)], -int(initial))
    return starts, ((toggles - base) & 1).astype(bool)


_SLICE_BYTES = 4 << 20
"""Vectorised scans go slice by slice, so their temporaries stay a few times this size."""


@dataclass(frozen=True)
class _Slice:
    start: int
    end: int
    data: np.ndarray
    runs: np.ndarray
    inside: np.ndarray
    initial: bool

    @property
    def final_state(self) -> bool:
        return bool(self.inside[-1]) if self.runs.size else self.initial


def _slices(buf: Buf, start: int, end: int, q: Quoting) -> Iterator[_Slice]:
    """The quote states of buf[start:end] (a record starts at `start`), one slice at a time;
    a slice never ends inside a run of quotes."""
    s, state = start, False
    while s < end:
        e = min(s + _SLICE_BYTES, end)
        while e < end and buf[e - 1] == q.quote and buf[e] == q.quote:
            e += 1
        a = np.frombuffer(buf, np.uint8, count=e - s, offset=s)
        runs, inside = _run_states(a, q, state, None if s == start else buf[s - 1])
        piece = _Slice(s, e, a, runs, inside, state)
        yield piece
        state, s = piece.final_state, e


def line_ends(a: np.ndarray, final: bool = True) -> np.ndarray:
    """Positions in `a` of every LF and every lone CR (a CR whose next byte is not LF); a CR
    in the last byte counts only if `final` (nothing follows it)."""
    ends = a == LF
    lone_cr = a == CR
    if not lone_cr.any():
        return np.flatnonzero(ends)
    lone_cr[:-1] &= ~ends[1:]
    if lone_cr.size and not final:
        lone_cr[-1] = False
    return np.flatnonzero(ends | lone_cr)


def boundaries(buf: Buf, start: int, end: int, q: Quoting, final: bool = True) -> np.ndarray:
    """Every record boundary (position just after a record's line ending) in buf[start:end].

    A CR at end-1 is a line ending if `final`, or if the byte at `end` is known and not LF."""
    found = [np.zeros(0, np.int64)]
    for piece in _slices(buf, start, end, q):
        after = piece.end < len(buf) and buf[piece.end] != LF
        newlines = line_ends(piece.data, after or (piece.end == end and final))
        if piece.runs.size:
            last_run = np.searchsorted(piece.runs, newlines) - 1
            quoted = np.where(last_run >= 0, piece.inside[np.maximum(last_run, 0)], piece.initial)
            newlines = newlines[~quoted]
        elif piece.initial:
            newlines = newlines[:0]
        found.append(newlines + (piece.start + 1))
    return np.concatenate(found)


def in_quotes(buf: Buf, start: int, pos: int, q: Quoting) -> bool:
    """Whether position `pos` is inside a quoted field, given a record starts at `start`."""
    state = _state_by_lookback(buf, start, pos, q)
    if state is not None:
        return state
    for piece in _slices(buf, start, pos, q):
        state = piece.final_state
    return bool(state)


def _lone_cr(buf: Buf, i: int, final: bool) -> bool:
    """Whether the CR at `i` ends a line by itself; at the end of buf, whether it is `final`."""
    return buf[i + 1] != LF if i + 1 < len(buf) else final


def _prev_line_end(buf: Buf, start: int, hi: int, final: bool) -> int:
    """The last LF or lone CR in buf[start:hi], or -1."""
    lf = buf.rfind(b"\n", start, hi)
    j = hi
    while (cr := buf.rfind(b"\r", max(lf + 1, start), j)) >= 0:
        if _lone_cr(buf, cr, final):
            return cr
        j = cr
    return lf


def _next_line_end(buf: Buf, lo: int, final: bool) -> int:
    """The first LF or lone CR in buf[lo:], or -1."""
    lf = buf.find(b"\n", lo)
    j = lo
    while (cr := buf.find(b"\r", j, lf if lf >= 0 else len(buf))) >= 0:
        if _lone_cr(buf, cr, final):
            return cr
        j = cr + 1
    return lf


def _follow(
    buf: Buf,
    start: int,
    q: Quoting,
    p: int,
    step: Callable[[int], int],
    anchored: bool = True,
) -> int | None:
    """From the line ending at `p`, stepping to the next candidate with `step`, the boundary
    after the first one outside quotes; -1 if there is none, None if that takes too long (or,
    not `anchored`, needs what came before `start`)."""
    for _ in range(_LOOKBACK_NEWLINES):
        if p < 0:
            return -1
        state = _state_by_lookback(buf, start, p, q, anchored)
        if state is None:
            return None
        if not state:
            return p + 1
        p = step(p)
    return None


def last_boundary(buf: Buf, start: int, end: int, q: Quoting, final: bool = True) -> int:
    """Position just after the last record-ending line ending in buf[start:end], or -1.

    `final`: nothing follows buf[:end] (else a CR at end-1 is undecided unless buf goes on)."""

    def prev(hi: int) -> int:
        return _prev_line_end(buf, start, hi, final)

    found = _follow(buf, start, q, prev(end), prev)
    if found is not None:
        return found
    every = boundaries(buf, start, end, q, final)
    return int(every[-1]) if every.size else -1


def tail_boundary(tail: Buf, q: Quoting) -> int | None:
    """Position just after the last record-ending line ending in `tail`, bytes that do not
    start on a record boundary and that more bytes follow; None when the look back from its
    end needs what came before `tail`. When found, it is the position `last_boundary` finds
    in any buffer that ends with `tail` and starts on a record boundary: a reset decides the
    state whatever came before it."""

    def prev(hi: int) -> int:
        return _prev_line_end(tail, 0, hi, False)

    found = _follow(tail, 0, q, prev(len(tail)), prev, anchored=False)
    return found if found is not None and found > 0 else None


def first_boundary(buf: Buf, start: int, after: int, q: Quoting, final: bool = True) -> int:
    """Position just after the first record-ending line ending at or after `after`, or -1."""
    found = _follow(
        buf,
        start,
        q,
        _next_line_end(buf, after, final),
        lambda p: _next_line_end(buf, p + 1, final),
    )
    if found is not None:
        return found
    every = boundaries(buf, start, len(buf), q, final)
    every = every[every > after]
    return int(every[0]) if every.size else -1


def count_lines(data: Buf, crs: bool | None = None) -> int:
    """Lines as Python's csv module counts them: LF, CRLF and a lone CR each end one. `crs`:
    whether `data` holds a CR, if the caller already knows."""
    crs = b"\r" in data if crs is None else crs
    return count_line_ends(np.frombuffer(data, np.uint8), crs)


_COUNT_SLICE = 1 << 18


def count_line_ends(a: np.ndarray, crs: bool = True) -> int:
    """LF, CRLF and lone CR bytes in `a`, each counted once; `crs=False` says that `a` holds
    no CR (`b"\r" in data` finds that out many times faster than counting them).

    Compared slice by slice into one small reused buffer: a fresh temporary the size of a
    block cost more in page faults than the comparison itself (0.24 s against 0.02 s over the
    192 MB bench file). numpy counts one byte several times faster than `bytes.count`."""
    hits = np.empty(min(a.size, _COUNT_SLICE), bool)
    lf = cr = 0
    for i in range(0, a.size, _COUNT_SLICE):
        piece = a[i : i + _COUNT_SLICE]
        lf += int(np.count_nonzero(np.equal(piece, LF, out=hits[: piece.size])))
        if crs:
            cr += int(np.count_nonzero(np.equal(piece, CR, out=hits[: piece.size])))
    if not cr:
        return lf
    return lf + cr - int(np.count_nonzero((a[:-1] == CR) & (a[1:] == LF)))


@dataclass(frozen=True)
class Block:
    """Whole records from the source: bytes that start and end on record boundaries."""

    data: bytes
    offset: int
    """Source byte offset of data[0]."""
    line: int
    """Source line number (1-based) of data[0]."""
    newlines: int
    unterminated: bool = False
    """The file ended inside this record's quoted field; the record is a reject."""
    crs: bool = True
    """Whether `data` holds a CR byte (True when not known): without one, counting the line
    endings of its values takes half the work."""

    @property
    def end(self) -> int:
        return self.offset + len(self.data)

    @property
    def end_line(self) -> int:
        return self.line + self.newlines


def _block(data: bytes, offset: int, line: int, unterminated: bool = False) -> Block:
    crs = b"\r" in data
    return Block(data, offset, line, count_lines(data, crs), unterminated, crs)


class RecordTooLong(PermanentError):
    """A record is longer than the job's maximum record size."""


def _check_record(pending: int, max_record: int, line: int, offset: int) -> None:
    if pending > max_record:
        raise RecordTooLong(
            f"the record starting at line {line} (byte {offset}) is longer than the maximum "
            f"record size of {max_record:,} bytes: an unterminated quote, a file without line "
            "endings, or a record that needs a higher limit (maxRecordBytes)"
        )


def _take(buf: Buf, cut: int) -> bytes:
    """buf[:cut] as bytes, copied once (not at all if that is all of a bytes buffer)."""
    if isinstance(buf, bytes) and cut == len(buf):
        return buf
    with memoryview(buf) as view:
        return bytes(view[:cut])


def _append(buf: Buf, data: bytes) -> Buf:
    """`buf` followed by `data`: `data` itself if `buf` is empty, else appended in place to a
    bytearray (a record spanning many reads is not copied again at each)."""
    if not buf:
        return data
    grown = buf if isinstance(buf, bytearray) else bytearray(buf)
    grown += data
    return grown


def _read_exactly(read: Callable[[int, int], bytes], offset: int, size: int) -> bytes:
    data = read(offset, size)
    if len(data) != size:
        raise OSError(f"source ended at byte {offset + len(data)}, expected {offset + size} bytes")
    return data


def iter_chunk(
    read: Callable[[int, int], bytes],
    *,
    offset: int,
    line: int,
    window: int,
    size: int,
    block_bytes: int,
    quoting: Quoting,
    max_record: int = DEFAULT_MAX_RECORD_BYTES,
    reread: bool = False,
) -> Iterator[Block]:
    """Yield the chunk starting at `offset` as blocks of whole records, reading `block_bytes`
    at a time so the first rows are available before the whole chunk is read.

    `read(offset, n)` returns up to n bytes, at most FIRST_READ_BYTES the first time. The cut
    does not depend on `block_bytes`. The unfinished record held between reads never exceeds
    `max_record` + 1 bytes.

    With `reread` (a source that reads a range again as cheaply as the first time, a local
    file), a block's records are read again instead of copied out of the buffer, and the
    unfinished record after them is read again with the next block instead of carried over.
    A read fills fresh memory without holding the GIL; the two copies it saves held it, for
    a quarter of the worker's wall time on the bench file (their pages are fresh too). Where
    the last `_TAIL_BYTES` of a read tell where its last record ends (`tail_boundary`), only
    they are read first, and the block's records once; otherwise the whole read, as above.
    Either way a block ends at the same boundary.
    """
    window_end = min(offset + max(window, 1), size)
    buf: Buf = b""
    pos = read_pos = offset
    emitted = extending = False
    scanned = 0
    while True:
        limit = size if extending else window_end
        wanted = FIRST_READ_BYTES if read_pos == offset else block_bytes
        n = min(wanted, block_bytes, limit - read_pos, max_record + 1 - len(buf))
        if reread and not buf and not extending and n > _TAIL_BYTES and read_pos + n < size:
            tail_start = read_pos + n - _TAIL_BYTES
            found = tail_boundary(_read_exactly(read, tail_start, _TAIL_BYTES), quoting)
            if found is not None:
                block = _block(_read_exactly(read, pos, tail_start + found - pos), pos, line)
                yield block
                emitted = True
                pos, line = block.end, block.end_line
                read_pos = pos
                continue
        if n > 0:
            data = read(read_pos, n)
            if not data:
                raise OSError(f"source ended at byte {read_pos}, expected {size} bytes")
            buf = _append(buf, data)
            read_pos += len(data)
        if extending:
            cut = first_boundary(buf, 0, scanned, quoting, final=False)
            if cut > 0:
                _check_record(cut, max_record, line, pos)
                yield _block(_take(buf, cut), pos, line)
                return
            scanned = max(len(buf) - 1, 0)
        if read_pos >= size:
            yield from _final_blocks(buf, pos, line, quoting, max_record)
            return
        if not extending:
            cut = last_boundary(buf, 0, len(buf), quoting, final=False)
            if cut > 0:
                records = _read_exactly(read, pos, cut) if reread else _take(buf, cut)
                block = _block(records, pos, line)
                yield block
                emitted = True
                pos, line = block.end, block.end_line
                buf, read_pos = (b"", pos) if reread else (buf[cut:], read_pos)
            if read_pos >= window_end:
                if emitted:
                    return
                extending = True
        _check_record(len(buf), max_record, line, pos)


def _final_blocks(
    buf: Buf, pos: int, line: int, quoting: Quoting, max_record: int
) -> Iterator[Block]:
    """The rest of the file: whole records, then possibly one with an unterminated quote."""
    if not buf:
        return
    if not in_quotes(buf, 0, len(buf), quoting):
        if len(buf) > max_record:
            last = max(last_boundary(buf, 0, len(buf) - 1, quoting), 0)
            _check_record(len(buf) - last, max_record, line + count_lines(buf[:last]), pos + last)
        yield _block(_take(buf, len(buf)), pos, line)
        return
    cut = last_boundary(buf, 0, len(buf), quoting)
    if cut > 0:
        block = _block(_take(buf, cut), pos, line)
        yield block
        buf, pos, line = buf[cut:], block.end, block.end_line
    _check_record(len(buf), max_record, line, pos)
    yield _block(_take(buf, len(buf)), pos, line, unterminated=True)
