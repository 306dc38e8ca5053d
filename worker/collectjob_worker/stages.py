"""The pipelined executor: read, parse and encode the next chunks while the current one commits.

Three stages run at once, each on its own thread(s), and hand over in source order:

    reader  --blocks-->  parsers (a pool, one block each)  --in order-->  encoder  --parts-->
    committer (the caller of `next`: writes the part, the ledger, then the checkpoint)

- The reader cuts chunks exactly as the sequential loop does, with `iter_chunk` from
  `(offset, window)`, so a chunk redone after a crash is the same bytes. The window of the
  chunk after a chunk is decided when that chunk's reading ends (from the throughput of the
  chunks committed so far) and is carried with it, so the committer stores it in the same
  checkpoint that commits the chunk: the cut of the next chunk depends on the checkpoint alone.
- Parsers work on independent blocks of whole records (pyarrow releases the GIL while it
  parses), several at a time; the encoder takes their results strictly in source order, so a
  part holds exactly the bytes the sequential loop writes.
- Nothing reaches the sink before `next` returns the chunk to the committer: parts, ledger
  entries and checkpoints are written by the caller only, one chunk after the other. A chunk
  read or parsed ahead and then abandoned (a stop, an error) leaves no trace.

Memory is bounded by the chunk size, whatever the file's size: a few blocks are ahead of the
encoder (`blocks_in_flight`; a parsed one holds its output, no longer its bytes), at most
two parts exist at once (the one being committed and the one being encoded) and together they
hold at most twice the source bytes of the larger one's chunk (`_wait_for_room`); the
committer lets go of a part as soon as it is written, and the reader blocks until there is
room. Tables are allocated on one thread and freed on another, which pyarrow's default
allocator (mimalloc) is slow to give back: on the bench file the worker's peak RSS was
195 MiB above the interpreter's with it, 90-100 MiB with jemalloc, so the worker package
makes jemalloc pyarrow's default (`collectjob_worker/__init__.py`).
"""

from __future__ import annotations

import collections
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

import pyarrow as pa

from collectjob_worker.chunking import Block
from collectjob_worker.csvparse import Reject
from collectjob_worker.formats import CsvPart, JsonlPart, ParquetPart, PartWriter

MIN_BLOCKS_IN_FLIGHT = 4
PARTS_IN_MEMORY = 2
PARSER_NICENESS = 10
"""How much lower than the rest of the worker the parser threads are scheduled (added to
their niceness, up to 19)."""
MAX_NICENESS = 19


def blocks_in_flight(sink_format: str, block_bytes: int) -> int:
    """How many blocks the parsers may work ahead of the encoder.

    A Parquet part is encoded a row group at a time, which takes a while: the parsers get a
    row group's worth of blocks, so that they go on meanwhile. With four 1 MiB blocks (local
    files) they stood idle through every flush: the bench's csv -> parquet took 0.96-0.98 s
    with four, 0.76-0.81 s with 16. CSV and JSON Lines parts only append what a parser made,
    and for JSON Lines, twice the size of its source, more blocks ahead only cost memory."""
    ahead = ParquetPart.ROW_GROUP_BYTES if sink_format == "parquet" else 0
    return max(MIN_BLOCKS_IN_FLIGHT, ahead // max(block_bytes, 1))


def yield_to_the_critical_path() -> None:
    """Lower the calling parser thread's priority below the encoder's and the committer's.

    The encoder and the committer each work on one thing at a time, in source order: they
    are the pipeline's critical path, and the parsers, several and ahead of them, are not.
    With two cores, the kernel shared them evenly between the encoder and two parsers, so
    the encoder ran on two thirds of a core and was behind all the time (a Parquet row group
    was being written through nearly the whole bench run). Niced parsers still get every
    cycle the encoder does not want (scheduling is work-conserving); they just wait for it.
    The bench's csv -> parquet took 0.64 s instead of 0.73 s, and its CPU 1.18 s instead of
    1.30 s (medians of 8 A/B rounds); niceness 19 gave 0.66 s. No job got slower.

    On Linux, PRIO_PROCESS with a thread's id sets that thread's niceness alone; in a
    container it only orders the container's own threads (each container has its own CPU
    group). Raising one's own niceness needs no privilege; where it fails the parsers just
    run at the worker's priority, as before."""
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(MAX_NICENESS, current + PARSER_NICENESS))
    except OSError:
        pass


class TableSink(Protocol):
    """Anything that takes a block's table (a part, or tables held for a processor)."""

    def write(self, table: pa.Table) -> None: ...


@dataclass(frozen=True)
class BlockOutput:
    """What one block contributes to its chunk's part: a table, or source bytes to copy."""

    rows: int
    rejects: list[Reject]
    accepted_bytes: int
    rejected_bytes: int
    """The block's source bytes, all of them, as accepted or rejected (conservation)."""
    table: pa.Table | None = None
    raw: bytes | pa.Buffer | None = None
    """The rows already in the part's format: the source's own bytes for a CSV copy, or
    JSON Lines (encoded on the parser's thread, so that blocks encode in parallel)."""

    @property
    def nbytes(self) -> int:
        """Memory the output holds, which a part grows by when it takes it."""
        if self.raw is not None:
            return len(self.raw)
        return 0 if self.table is None else self.table.nbytes

    def write_to(self, part: PartWriter | TableSink) -> None:
        if self.raw is not None and isinstance(part, CsvPart | JsonlPart):
            part.write_raw(self.raw)
        elif self.table is not None:
            part.write(self.table)


@dataclass(frozen=True)
class ChunkStart:
    """Where the next chunk starts and how it is cut: what the checkpoint holds."""

    index: int
    offset: int
    line: int
    window: int


@dataclass
class ChunkDone:
    """An encoded chunk, ready to be written and committed."""

    index: int
    start: int
    end: int
    end_line: int
    next_window: int = 0
    data: list[bytes] = field(default_factory=list)
    sha256: str = ""
    """Of the part's bytes, `data`."""
    rows: int = 0
    rejects: list[Reject] = field(default_factory=list)
    accepted_bytes: int = 0
    rejected_bytes: int = 0

    @classmethod
    def starting(cls, start: ChunkStart) -> ChunkDone:
        return cls(start.index, start.offset, start.offset, start.line)

    def take_part(self, part: PartWriter) -> None:
        """Finish `part` and hold its bytes and their hash, which a Parquet part knows only
        once it is finished."""
        self.data = part.finish()
        self.sha256 = part.sha256

    def take_data(self) -> list[bytes]:
        """The part's bytes, handed over once. The committer holds a chunk until the next one
        arrives, which is while that one is encoded: were the written part still referenced,
        two whole parts would always be in memory instead of one and a growing one."""
        data, self.data = self.data, []
        return data

    def add(self, output: BlockOutput, end: int, end_line: int) -> None:
        """Count a block, ending at `end` on `end_line`, that follows the ones before it
        (`_blocks` checks that)."""
        self.rows += output.rows
        self.rejects.extend(output.rejects)
        self.accepted_bytes += output.accepted_bytes
        self.rejected_bytes += output.rejected_bytes
        self.end, self.end_line = end, end_line


@dataclass(frozen=True)
class _Parsing:
    """A block handed to the parsers: where it ends, not its bytes, so that a parsed block
    waiting for the encoder holds only its output."""

    output: Future[BlockOutput]
    end: int
    end_line: int


@dataclass
class _Chunk:
    start: ChunkStart
    items: queue.SimpleQueue[_Parsing | _End | BaseException] = field(
        default_factory=queue.SimpleQueue
    )


@dataclass(frozen=True)
class _Waiting:
    """An encoded part handed to the committer and not yet committed."""

    size: int
    window: int
    """Its chunk's window: at most the chunk's source bytes, unless one record is longer."""


@dataclass(frozen=True)
class _End:
    end: int
    end_line: int
    next_window: int


class PipelinedChunks:
    """Chunks from `start` to `size`, read, parsed and encoded ahead of the committer.

    Use as a context manager; `next()` returns the chunks in order, and `committed()` must be
    called once each has been committed (it frees its memory and measures the throughput).
    """

    def __init__(
        self,
        *,
        start: ChunkStart,
        size: int,
        blocks: Callable[[int, int, int], Iterator[Block]],
        parse: Callable[[Block], BlockOutput],
        new_part: Callable[[], PartWriter],
        next_window: Callable[[int, float, int], int],
        on_rows: Callable[[], None] = lambda: None,
        threads: int | None = None,
        in_flight: int = MIN_BLOCKS_IN_FLIGHT,
    ) -> None:
        self._start, self._size = start, size
        self._blocks, self._parse, self._new_part = blocks, parse, new_part
        self._next_window, self._on_rows = next_window, on_rows
        self._pool = ThreadPoolExecutor(
            max(2, threads or os.cpu_count() or 2),
            thread_name_prefix="parse",
            initializer=yield_to_the_critical_path,
        )
        self._chunks: queue.SimpleQueue[_Chunk | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[ChunkDone | BaseException] = queue.SimpleQueue()
        self._slots = threading.Semaphore(in_flight)
        self._parts = threading.Semaphore(PARTS_IN_MEMORY)
        self._room = threading.Condition()
        self._waiting: collections.deque[_Waiting] = collections.deque()
        """The encoded parts handed to the committer and not yet committed, oldest first."""
        self._cancelled = threading.Event()
        self._threads = [
            threading.Thread(target=self._read, name="read", daemon=True),
            threading.Thread(target=self._encode, name="encode", daemon=True),
        ]
        self._began = 0.0
        self._committed_bytes = 0
        self._rate: float | None = None

    def __enter__(self) -> PipelinedChunks:
        self._began = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def next(self) -> ChunkDone:
        done = self._done.get()
        if isinstance(done, BaseException):
            raise done
        return done

    def committed(self, done: ChunkDone) -> None:
        """The committer is done with `done`: its part may go, and its bytes count."""
        self._committed_bytes += done.end - done.start
        self._rate = self._committed_bytes / max(time.monotonic() - self._began, 1e-6)
        with self._room:
            self._waiting.popleft()
            self._room.notify()
        self._parts.release()

    def close(self) -> None:
        """Abandon whatever is ahead of the committer. Nothing of it was written, so there
        is nothing to wait for: a stop must not hang on a read ahead that hangs (a stalled
        server). The stages see the flag at their next step and end; they are daemons."""
        self._cancelled.set()
        # One thread at most waits on each (the reader, the encoder); it sees the flag.
        self._slots.release()
        self._parts.release()
        with self._room:
            self._room.notify()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _window_after(self, window: int, end: int) -> int:
        """The window of the chunk after the one of `window` bytes that ends at `end`."""
        rate = self._rate
        return self._next_window(window, window / rate if rate else 0.0, end)

    def _read(self) -> None:
        at = self._start
        chunk = None
        try:
            while at.offset < self._size and not self._cancelled.is_set():
                chunk = _Chunk(at)
                self._chunks.put(chunk)
                end, end_line = at.offset, at.line
                for block in self._blocks(at.offset, at.line, at.window):
                    self._slots.acquire()
                    if self._cancelled.is_set():
                        return
                    end, end_line = block.end, block.end_line
                    chunk.items.put(_Parsing(self._pool.submit(self._parse, block), end, end_line))
                after = self._window_after(at.window, end)
                chunk.items.put(_End(end, end_line, after))
                chunk = None
                at = ChunkStart(at.index + 1, end, end_line, after)
        except BaseException as e:
            if chunk is None:
                chunk = _Chunk(at)
                self._chunks.put(chunk)
            chunk.items.put(e)
            chunk = None
        finally:
            if chunk is not None:
                chunk.items.put(RuntimeError("abandoned"))
            self._chunks.put(None)

    def _encode(self) -> None:
        try:
            while (chunk := self._chunks.get()) is not None:
                self._parts.acquire()
                if self._cancelled.is_set():
                    return
                self._done.put(self._encode_chunk(chunk))
        except BaseException as e:
            self._done.put(e)

    def _encode_chunk(self, chunk: _Chunk) -> ChunkDone:
        part = self._new_part()
        done = ChunkDone.starting(chunk.start)
        while not isinstance(item := chunk.items.get(), _End):
            if isinstance(item, BaseException):
                raise item
            output = item.output.result()
            self._wait_for_room(part.held_bytes + output.nbytes, chunk.start.window)
            self._slots.release()
            output.write_to(part)
            done.add(output, item.end, item.end_line)
            self._on_rows()
        done.end, done.end_line, done.next_window = item.end, item.end_line, item.next_window
        done.take_part(part)
        with self._room:
            self._waiting.append(_Waiting(sum(map(len, done.data)), chunk.start.window))
        return done

    def _wait_for_room(self, wanted: int, window: int) -> None:
        """Let the part being encoded, of a chunk of `window` source bytes, grow to `wanted`
        bytes only if, with the parts still waiting to be committed, the parts in memory stay
        within PARTS_IN_MEMORY windows of the largest of their chunks, or once none is waiting
        (a part may be larger than that on its own: a chunk is never split).

        The committer may take longer to write a part than the encoder to build the next
        (a slow disk or object store), and a part can be larger than its source: JSON Lines
        are about twice the CSV they come from. Counting parts would let two such parts
        exist at once; counting their bytes keeps the parts within two chunks of source.
        Until then the parsed block stays in flight, so the reader waits too.

        The largest chunk's window, not the part's own: near the end of the source chunks
        shrink (`tapered`), and two of a small chunk's windows left no room beside the large
        part before it, so the encoder and the parsers stood still while that part was
        written. The bench's csv -> csv spent 0.16 s of its 0.75 s waiting so; without the
        wait it took 0.65 s (csv -> jsonl 1.30 s instead of 1.39 s, medians of 7 and 5 A/B
        rounds), its peak RSS 240 MiB instead of 208, within the bench's bound of 313; on the
        2 GB file of the memory bench the worst job still peaked 176 MiB above the
        interpreter's RSS, within 3 x chunkBytes = 192 MiB."""
        with self._room:
            while self._waiting and not self._cancelled.is_set():
                largest = max(window, *(part.window for part in self._waiting))
                if sum(part.size for part in self._waiting) + wanted <= PARTS_IN_MEMORY * largest:
                    return
                self._room.wait()
