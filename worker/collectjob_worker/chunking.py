"""Record boundaries in raw CSV bytes, and deterministic chunk cuts.

A record ends at an LF that is outside quotes. Whether a byte is inside quotes depends only on
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
at or before `offset + window`, or, if a single record is longer than the window, at the first
boundary after it; the end of the file counts as a boundary. So redoing an uncommitted chunk
after a crash cuts exactly the same bytes, whatever the block size used to read them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

LF = 0x0A
CR = 0x0D
_LOOKBACK_RUNS = 64
_LOOKBACK_NEWLINES = 64


@dataclass(frozen=True)
class Quoting:
    """The two bytes the state machine looks at."""

    delimiter: int = ord(",")
    quote: int = ord('"')


def _state_by_lookback(buf: bytes, start: int, pos: int, q: Quoting) -> bool | None:
    """Whether `pos` is inside quotes, walking back to the last reset; None if that is too far."""
    quote = bytes((q.quote,))
    toggles = 0
    i = pos
    for _ in range(_LOOKBACK_RUNS):
        j = buf.rfind(quote, start, i)
        if j < 0:
            return bool(toggles & 1)
        k = j
        while k > start and buf[k - 1] == q.quote:
            k -= 1
        if (j - k + 1) & 1:
            if k == start or buf[k - 1] in (q.delimiter, LF, CR):
                toggles += 1
            else:
                return bool(toggles & 1)
        i = k
    return None


def _run_states(a: np.ndarray, q: Quoting) -> tuple[np.ndarray, np.ndarray]:
    """Start of each quote run in `a`, and whether the state is "inside" right after it."""
    qpos = np.flatnonzero(a == q.quote)
    if qpos.size == 0:
        return qpos, qpos.astype(bool)
    breaks = np.flatnonzero(np.diff(qpos) != 1)
    starts = qpos[np.r_[0, breaks + 1]]
    ends = qpos[np.r_[breaks, qpos.size - 1]]
    odd = ((ends - starts + 1) & 1).astype(bool)
    prev = a[np.maximum(starts - 1, 0)]
    at_field_start = (starts == 0) | (prev == q.delimiter) | (prev == LF) | (prev == CR)
    toggles = np.cumsum(odd & at_field_start)
    reset = odd & ~at_field_start
    last_reset = np.maximum.accumulate(np.where(reset, np.arange(starts.size), -1))
    base = np.where(last_reset >= 0, toggles[np.maximum(last_reset, 0)], 0)
    return starts, ((toggles - base) & 1).astype(bool)


def boundaries(buf: bytes, start: int, end: int, q: Quoting) -> np.ndarray:
    """Every record boundary (position just after a record's LF) in buf[start:end]."""
    a = np.frombuffer(buf, np.uint8, count=end - start, offset=start)
    newlines = np.flatnonzero(a == LF)
    run_starts, inside = _run_states(a, q)
    if run_starts.size:
        last_run = np.searchsorted(run_starts, newlines) - 1
        quoted = np.where(last_run >= 0, inside[np.maximum(last_run, 0)], False)
        newlines = newlines[~quoted]
    return newlines + (start + 1)


def in_quotes(buf: bytes, start: int, pos: int, q: Quoting) -> bool:
    """Whether position `pos` is inside a quoted field, given a record starts at `start`."""
    state = _state_by_lookback(buf, start, pos, q)
    if state is not None:
        return state
    a = np.frombuffer(buf, np.uint8, count=pos - start, offset=start)
    run_starts, inside = _run_states(a, q)
    return bool(inside[-1]) if run_starts.size else False


def _follow(buf: bytes, start: int, q: Quoting, p: int, step: Callable[[int], int]) -> int | None:
    """From the LF at `p`, stepping to the next candidate LF with `step`, the boundary after
    the first LF outside quotes; -1 if there is none, None if that takes too long to tell."""
    for _ in range(_LOOKBACK_NEWLINES):
        if p < 0:
            return -1
        state = _state_by_lookback(buf, start, p, q)
        if state is None:
            return None
        if not state:
            return p + 1
        p = step(p)
    return None


def last_boundary(buf: bytes, start: int, end: int, q: Quoting) -> int:
    """Position just after the last record-ending LF in buf[start:end], or -1 if none."""
    found = _follow(
        buf, start, q, buf.rfind(b"\n", start, end), lambda p: buf.rfind(b"\n", start, p)
    )
    if found is not None:
        return found
    every = boundaries(buf, start, end, q)
    return int(every[-1]) if every.size else -1


def first_boundary(buf: bytes, start: int, after: int, q: Quoting) -> int:
    """Position just after the first record-ending LF at or after `after`, or -1 if none."""
    found = _follow(buf, start, q, buf.find(b"\n", after), lambda p: buf.find(b"\n", p + 1))
    if found is not None:
        return found
    every = boundaries(buf, start, len(buf), q)
    every = every[every > after]
    return int(every[0]) if every.size else -1


def count_lines(data: bytes | memoryview) -> int:
    return int(np.count_nonzero(np.frombuffer(data, np.uint8) == LF))


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

    @property
    def end(self) -> int:
        return self.offset + len(self.data)

    @property
    def end_line(self) -> int:
        return self.line + self.newlines


def _block(data: bytes, offset: int, line: int, unterminated: bool = False) -> Block:
    return Block(data, offset, line, count_lines(data), unterminated)


def iter_chunk(
    read: Callable[[int, int], bytes],
    *,
    offset: int,
    line: int,
    window: int,
    size: int,
    block_bytes: int,
    quoting: Quoting,
) -> Iterator[Block]:
    """Yield the chunk starting at `offset` as blocks of whole records, reading `block_bytes`
    at a time so the first rows are available before the whole chunk is read.

    `read(offset, n)` returns up to n bytes. The cut does not depend on `block_bytes`.
    """
    window_end = min(offset + max(window, 1), size)
    buf = b""
    pos = read_pos = offset
    emitted = extending = False
    scanned = 0
    while True:
        limit = size if extending else window_end
        n = min(block_bytes, limit - read_pos)
        if n > 0:
            data = read(read_pos, n)
            if not data:
                raise OSError(f"source ended at byte {read_pos}, expected {size} bytes")
            buf = buf + data if buf else data
            read_pos += len(data)
        if extending:
            cut = first_boundary(buf, 0, scanned, quoting)
            if cut > 0:
                yield _block(buf[:cut], pos, line)
                return
            scanned = len(buf)
        if read_pos >= size:
            yield from _final_blocks(buf, pos, line, quoting)
            return
        if extending:
            continue
        cut = last_boundary(buf, 0, len(buf), quoting)
        if cut > 0:
            block = _block(buf[:cut], pos, line)
            yield block
            emitted = True
            buf, pos, line = buf[cut:], block.end, block.end_line
        if read_pos >= window_end:
            if emitted:
                return
            extending = True


def _final_blocks(buf: bytes, pos: int, line: int, quoting: Quoting) -> Iterator[Block]:
    """The rest of the file: whole records, then possibly one with an unterminated quote."""
    if not buf:
        return
    if not in_quotes(buf, 0, len(buf), quoting):
        yield _block(buf, pos, line)
        return
    cut = last_boundary(buf, 0, len(buf), quoting)
    if cut > 0:
        block = _block(buf[:cut], pos, line)
        yield block
        buf, pos, line = buf[cut:], block.end, block.end_line
    yield _block(buf, pos, line, unterminated=True)
