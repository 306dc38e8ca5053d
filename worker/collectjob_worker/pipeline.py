"""The worker's loop: read the chunk at the checkpoint's offset, parse, transform, write its
part, commit the checkpoint; repeat until the source is done or a stop is requested.

Exactly once. The commit order is: part (and rejects) written atomically, ledger entry
written, then the checkpoint advanced. A crash before the checkpoint commit leaves the chunk
uncommitted; the next run reads the same offset and the same `next_chunk_bytes` from the
checkpoint, cuts the same chunk (the cut depends on nothing else) and overwrites the part with
identical bytes. A crash after it loses nothing. So every accepted row is in exactly one part.

Resume. The checkpoint holds the header and the byte offset of the next record, so a resumed
run seeks straight there: its cost does not depend on how much was already done.

Fencing. Taking over a checkpoint bumps its epoch with a conditional write; every later write
is conditional too. A worker whose write conflicts has been superseded and stops at once,
without committing (CheckpointConflict propagates).

Stopping. The stop flag is checked before every chunk and before finalising, so a stopped
worker never writes `_manifest.json` or `_SUCCESS` nor commits `done`, even when the stop
came during the last chunk: the next run finds every chunk committed and finalises.

Errors. Acquiring clears the checkpoint's `error`: a rerun tries again, because the cause of
a permanent error may have been put right (the original source restored, the source file
put in place). A cause that persists is met, and recorded, again.

Promptness. Each chunk aims at about one second of work (TARGET_CHUNK_SECONDS), within
`chunk_bytes`, so a stop request is honoured quickly. The size of the next chunk is decided
when a chunk commits and is stored in the checkpoint, which keeps redo cuts deterministic.

Commit rate. A chunk is never sized below MIN_COMMIT_SECONDS of work at the measured rate,
even above `chunk_bytes` (up to MAX_COALESCED_BYTES): tiny chunks are coalesced so the
checkpoint is written at most a few times a second, whatever `chunkBytes` says.

Conservation. Every chunk's source bytes are accounted for: accepted plus rejected bytes
equal the chunk's length (blocks contiguous, each block proven by `ParsedBlock.accounted`),
or the job fails naming the chunk and its byte range. The ledger and `_manifest.json` record
both sums.

Retries. Sources and sinks retry transient errors within the job's retry budget; while they
do, `note_retrying` records the reason in the checkpoint (`retrying`), which the operator
shows as condition Progressing with that reason, and the next commit clears it.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa

from collectjob_api.checkpoint import Checkpoint, Retrying
from collectjob_api.contract import DEFAULT_MAX_RECORD_BYTES, SinkOptions
from collectjob_api.rfc3339 import now_text
from collectjob_worker.checkpoint_store import CheckpointStore
from collectjob_worker.chunking import Block, Quoting, iter_chunk
from collectjob_worker.csvparse import BlockParser, Unaccounted
from collectjob_worker.dialect import Dialect
from collectjob_worker.errors import CheckpointConflict, PermanentError, SourceChanged, WorkerError
from collectjob_worker.formats import (
    FORMATS,
    REJECT_SCHEMA,
    PartWriter,
    jsonl_lines,
    part_writer,
)
from collectjob_worker.header import check_names, read_header
from collectjob_worker.manifest import (
    ChunkRecord,
    PartFile,
    clear_success,
    finalize,
    ledger_name,
    part_name,
    rejects_name,
)
from collectjob_worker.metrics import WorkerMetrics
from collectjob_worker.processors.runner import ProcessorRunner, kept_rows
from collectjob_worker.sinks import SinkStore
from collectjob_worker.sources import Source
from collectjob_worker.stages import (
    BlockOutput,
    ChunkDone,
    ChunkStart,
    PipelinedChunks,
    blocks_in_flight,
)
from collectjob_worker.throttle import Throttle
from collectjob_worker.transform import Transform

log = logging.getLogger(__name__)
TARGET_CHUNK_SECONDS = 1.0
MIN_COMMIT_SECONDS = 0.25
"""A chunk is at least this much work at the measured rate: at most ~4 commits a second."""
MAX_COALESCED_BYTES = 64 << 20
"""How far above `chunk_bytes` coalescing may grow a chunk (its part is built in memory)."""
COALESCE_GROWTH = 8
"""Coalescing grows a chunk at most this much per commit: a rate measured on a tiny chunk is
a poor guess, and an oversized chunk would make a suspend wait."""
INITIAL_CHUNK_BYTES = 1 << 20
MIN_CHUNK_BYTES = 64 << 10
TAPER_STEPS = 8
"""The last chunks of a source shrink to `chunk_bytes / TAPER_STEPS` at the least (`tapered`)."""
JSONL_LOCAL_BLOCK_BYTES = 1 << 20
"""The block size for JSON Lines from a local file (see `Job.block_bytes`)."""


class Outcome(enum.Enum):
    DONE = "done"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Job:
    """Everything a run needs, built from command-line flags or the operator's env."""

    source: Source
    sink: SinkStore
    sink_format: str
    dialect: Dialect
    transform: Transform | None
    store: CheckpointStore
    holder: str
    chunk_bytes: int
    processor: ProcessorRunner | None = None
    sink_options: SinkOptions = field(default_factory=SinkOptions)
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    min_commit_seconds: float = MIN_COMMIT_SECONDS
    """Least work per commit; `local --min-commit-seconds` lowers it (tests need many chunks)."""
    throttle: Throttle | None = None

    def __post_init__(self) -> None:
        if self.sink_format not in FORMATS:
            raise PermanentError(
                f"sink format {self.sink_format!r} is not one of {', '.join(FORMATS)}"
            )

    @property
    def block_bytes(self) -> int:
        """Source bytes per block: the source's own choice, except for JSON Lines from a
        local file, at most JSONL_LOCAL_BLOCK_BYTES.

        A block's JSON Lines are built on a parser's thread, twice its bytes and a few
        temporaries more, several blocks at once: with the local file's 2 MiB blocks the
        memory bench's 2 GB file to JSON Lines peaked at 197 MiB above the interpreter, over
        its bound of 3 x chunkBytes = 192 MiB (1 MiB blocks: 180). A network source keeps
        its blocks, which are one request each."""
        if self.sink_format == "jsonl" and self.source.rereads_cheaply:
            return min(self.source.block_bytes, JSONL_LOCAL_BLOCK_BYTES)
        return self.source.block_bytes

    @property
    def copies_bytes(self) -> bool:
        """csv to csv with nothing to change: accepted records are copied byte for byte."""
        return (
            self.sink_format == "csv"
            and self.transform is None
            and self.processor is None
            and self.dialect.is_rfc4180
        )


class _Processed:
    """A chunk's processed tables, held until the chunk ends: a processor decides the part's
    columns, which are known only once it has run."""

    def __init__(self) -> None:
        self.tables: list[pa.Table] = []

    def write(self, table: pa.Table) -> None:
        self.tables.append(table)

    def into(self, part: PartWriter) -> PartWriter:
        for table in self.tables:
            part.write(table)
        return part


def next_chunk_size(
    current: int, seconds: float, limit: int, min_commit_seconds: float = MIN_COMMIT_SECONDS
) -> int:
    """Aim at TARGET_CHUNK_SECONDS within `limit`, but never below `min_commit_seconds` of
    work at the rate just measured (coalescing, capped at MAX_COALESCED_BYTES)."""
    factor = 2.0 if seconds <= 0 else max(0.25, min(2.0, TARGET_CHUNK_SECONDS / seconds))
    wanted = max(min(limit, MIN_CHUNK_BYTES), min(limit, int(current * factor)))
    if min_commit_seconds <= 0:
        return wanted
    quickest = MAX_COALESCED_BYTES if seconds <= 0 else current * min_commit_seconds / seconds
    return max(wanted, min(int(quickest), current * COALESCE_GROWTH, MAX_COALESCED_BYTES))


def tapered(window: int, remaining: int, limit: int) -> int:
    """`window`, cut to half of the `remaining` source bytes near the end of the source, but
    never below `limit // TAPER_STEPS` nor MIN_CHUNK_BYTES.

    The last chunk's part is encoded and written after the parsers have run out of work, so
    every other core is idle for as long as that takes: the smaller the last chunk, the
    shorter that tail. Halving what remains keeps the chunks before it large; the floor adds
    at most log2(TAPER_STEPS) commits to a job, whatever the coalescing says."""
    return min(window, max(remaining // 2, limit // TAPER_STEPS, MIN_CHUNK_BYTES))


_FENCES = np.zeros(256, bool)
_FENCES[list(b',\r\n"')] = True
"""Bytes that may stand next to a quote in RFC 4180 CSV (a comma, a line end, a quote)."""


def _strict(raw: bytes) -> bool:
    """Whether records may be copied as they stand: LF line ends only and no stray quote, a
    quote between two other bytes (which Python's csv module reads leniently but strict
    readers such as DuckDB do not). Vectorised over the quotes: a regex took ten times as long."""
    if b"\r" in raw:
        return False
    a = np.frombuffer(raw, np.uint8)
    quotes = np.flatnonzero(a[1:-1] == ord('"')) + 1
    return not np.any(~_FENCES[a[quotes - 1]] & ~_FENCES[a[quotes + 1]])


class Pipeline:
    def __init__(
        self,
        job: Job,
        metrics: WorkerMetrics,
        stop: threading.Event,
        on_commit: Callable[[Checkpoint], None] = lambda checkpoint: None,
        *,
        pipelined: bool = True,
    ) -> None:
        self.job = job
        self.metrics = metrics
        self.stop = stop
        self.on_commit = on_commit
        self.pipelined = pipelined
        """Overlap reading, parsing and encoding with committing (stages.py); the parts are
        the same bytes either way. A job with a processor runs sequentially: processors keep
        per-chunk state and see the blocks one after the other."""
        self.checkpoint = Checkpoint()
        self.version = ""
        self.first_row_seconds: float | None = None
        """Seconds from the start of `run` to the first parsed rows, a measure of resume cost."""
        self.chunk_started: float | None = None
        self.last_chunk_seconds = 0.0
        self._started = 0.0
        self._parser: BlockParser | None = None
        self._schema = pa.schema([])

    def run(self) -> Outcome:
        self._started = time.monotonic()
        stored = self.job.store.load()
        self.checkpoint, self.version = stored.checkpoint, stored.version
        if self.checkpoint.done:
            return Outcome.DONE
        try:
            self._acquire()
            if self.pipelined and self.job.processor is None:
                return self._run_pipelined()
            while not self.stop.is_set():
                if self.checkpoint.offset >= self.checkpoint.bytes_total:
                    self._finish()
                    return Outcome.DONE
                self._process_chunk()
            return Outcome.STOPPED
        except PermanentError as e:
            self._record(e)
            raise
        except CheckpointConflict:
            self.metrics.conflicts.inc()
            raise

    def _commit(self, checkpoint: Checkpoint) -> None:
        started = time.monotonic()
        self.version = self.job.store.save(checkpoint, self.version)
        self.metrics.committed(self.checkpoint, checkpoint, time.monotonic() - started, time.time())
        self.checkpoint = checkpoint
        self.on_commit(checkpoint)

    def note_retrying(self, reason: str, message: str) -> None:
        """Record in the checkpoint that a transient error is being retried (once per episode;
        the next commit clears it). Best effort: the checkpoint store may be what is down."""
        if self.checkpoint.retrying is not None and self.checkpoint.retrying.reason == reason:
            return
        try:
            self._commit(self.checkpoint.evolve(retrying=Retrying(reason, message, now_text())))
        except WorkerError as e:
            log.warning("could not record the retry in %s: %s", self.job.store.description, e)

    def _record(self, error: PermanentError) -> None:
        try:
            self._commit(self.checkpoint.with_error(str(error)))
        except WorkerError as e:
            log.error("could not record the error in %s: %s", self.job.store.description, e)

    def _check_source(self) -> None:
        fingerprint = self.job.source.stat().fingerprint
        if fingerprint != self.checkpoint.fingerprint:
            raise SourceChanged(
                f"source {self.job.source.url} changed since the checkpoint "
                f"({self.checkpoint.fingerprint} -> {fingerprint}); refusing to mix two "
                "versions of one file: restore the original or start a new job"
            )

    def _acquire(self) -> None:
        cp, job = self.checkpoint, self.job
        taken = cp.evolve(holder=job.holder, epoch=cp.epoch + 1, error="", updated_at=now_text())
        if cp.fingerprint:
            self._check_source()
        else:
            stat = job.source.stat()
            header = read_header(job.source, stat.size, job.dialect, job.max_record_bytes)
            taken = taken.evolve(
                offset=header.data_offset,
                header_end=header.data_offset,
                line=header.data_line,
                header=header.names,
                bytes_total=stat.size,
                fingerprint=stat.fingerprint,
                next_chunk_bytes=min(self._limit, INITIAL_CHUNK_BYTES),
                started_at=taken.updated_at,
            )
            clear_success(job.sink)
        if job.transform is not None and taken.header:
            job.transform.check_header(taken.header)
        self._commit(taken)
        if job.transform is None:
            # After the commit, so that a header over the checkpoint's bounds says so first.
            check_names(taken.header, job.sink_format, job.source.url)
        self._parser = BlockParser(taken.header, job.dialect)
        if job.transform is not None:
            self._schema = job.transform.schema
        else:
            self._schema = self._parser.schema

    def _blocks(self, offset: int, line: int, window: int) -> Iterator[Block]:
        """The chunk's blocks, checked to follow each other without a gap (conservation)."""
        blocks = iter_chunk(
            self.job.source.read,
            offset=offset,
            line=line,
            window=window,
            size=self.checkpoint.bytes_total,
            block_bytes=self.job.block_bytes,
            quoting=Quoting(self.job.dialect.delimiter_byte, self.job.dialect.quote_byte),
            max_record=self.job.max_record_bytes,
            reread=self.job.source.rereads_cheaply,
        )
        end = offset
        for block in blocks:
            if block.offset != end:
                raise Unaccounted(
                    f"source bytes {end}-{block.offset} of {self.job.source.url} were skipped "
                    "between two blocks; refusing to commit (this is a bug)"
                )
            end = block.end
            yield block

    def _part(self, schema: pa.Schema) -> PartWriter:
        return part_writer(self.job.sink_format, schema, self.job.sink_options)

    def _first_rows(self) -> None:
        if self.first_row_seconds is None:
            self.first_row_seconds = time.monotonic() - self._started

    def _process_chunk(self) -> None:
        """The sequential executor: read, parse and encode one chunk, then commit it."""
        cp = self.checkpoint
        self.chunk_started = started = time.monotonic()
        job = self.job
        part: PartWriter | _Processed = _Processed() if job.processor else self._part(self._schema)
        if job.processor is not None:
            job.processor.begin(cp.chunk_index, job.sink)
        done = ChunkDone.starting(ChunkStart(cp.chunk_index, cp.offset, cp.line, 0))
        for block in self._blocks(cp.offset, cp.line, cp.next_chunk_bytes):
            output = self._process_block(block)
            output.write_to(part)
            self._first_rows()
            done.add(output, block.end, block.end_line)
        if isinstance(part, _Processed):
            part = part.into(self._part(self._output_schema))
        seconds = time.monotonic() - started
        done.next_window = self._next_window(cp.next_chunk_bytes, seconds, done.end)
        done.take_part(part)
        self._commit_chunk(done, started)

    def _next_window(self, window: int, seconds: float, end: int) -> int:
        """The window of the chunk after the one ending at `end`. A throttled job is not
        coalesced: its pacing already keeps commits to at most one a second, and its chunks
        must stay within the throttle's chunk limit."""
        if self.job.throttle is not None:
            wanted = next_chunk_size(window, seconds, self._limit, min_commit_seconds=0)
        else:
            wanted = next_chunk_size(window, seconds, self._limit, self.job.min_commit_seconds)
        return tapered(wanted, self.checkpoint.bytes_total - end, self._limit)

    def _run_pipelined(self) -> Outcome:
        """The pipelined executor: the next chunks are read, parsed (on several threads) and
        encoded while this thread writes and commits the current one, strictly in order."""
        cp = self.checkpoint
        with PipelinedChunks(
            start=ChunkStart(cp.chunk_index, cp.offset, cp.line, cp.next_chunk_bytes),
            size=cp.bytes_total,
            blocks=self._blocks,
            parse=self._process_block,
            new_part=lambda: self._part(self._schema),
            next_window=self._next_window,
            on_rows=self._first_rows,
            in_flight=blocks_in_flight(self.job.sink_format, self.job.block_bytes),
        ) as chunks:
            while not self.stop.is_set():
                if self.checkpoint.offset >= self.checkpoint.bytes_total:
                    self._finish()
                    return Outcome.DONE
                self.chunk_started = started = time.monotonic()
                done = chunks.next()
                self._commit_chunk(done, started)
                chunks.committed(done)
        return Outcome.STOPPED

    def _commit_chunk(self, done: ChunkDone, started: float) -> None:
        """Write the chunk's part, rejects and ledger entry, then commit the checkpoint."""
        cp = self.checkpoint
        if done.accepted_bytes + done.rejected_bytes != done.end - done.start:
            raise Unaccounted(
                f"chunk {done.index} (source bytes {done.start}-{done.end}) of "
                f"{self.job.source.url} is not fully accounted for: {done.accepted_bytes} "
                f"accepted + {done.rejected_bytes} rejected bytes; refusing to commit it "
                "(this is a bug)"
            )
        self._check_source()
        self._write(done)
        if self.job.processor is not None:
            self.job.processor.commit(done.index, self.job.sink)
        seconds = time.monotonic() - started
        self.metrics.chunk_seconds.observe(seconds)
        self._commit(
            cp.evolve(
                offset=done.end,
                line=done.end_line,
                rows_processed=cp.rows_processed + done.rows,
                rows_rejected=cp.rows_rejected + len(done.rejects),
                chunk_index=cp.chunk_index + 1,
                next_chunk_bytes=done.next_window,
                retrying=None,
                updated_at=now_text(),
            )
        )
        self.chunk_started, self.last_chunk_seconds = None, seconds
        if self.job.throttle is not None:
            self.job.throttle.pace(done.end - done.start, self.stop)

    @property
    def _limit(self) -> int:
        throttle = self.job.throttle
        return (
            self.job.chunk_bytes if throttle is None else throttle.chunk_limit(self.job.chunk_bytes)
        )

    def _process_block(self, block: Block) -> BlockOutput:
        """The rows of one block, its rejects, and its bytes accounted for as accepted or
        rejected. Safe to call for several blocks at once."""
        assert self._parser is not None
        copy = self.job.copies_bytes
        parsed = self._parser.parse(block, values=not copy)
        if copy and parsed.clean and _strict(parsed.raw):
            raw = parsed.raw
            accepted, rejected = parsed.accounted(len(block.data), [])
            return BlockOutput(
                parsed.rows, [], accepted, rejected, raw=raw if raw.endswith(b"\n") else raw + b"\n"
            )
        if parsed.table is None:
            parsed = self._parser.parse(block, values=True)
        assert parsed.table is not None
        table, dropped = parsed.table, []
        rows = np.arange(table.num_rows)
        """The parsed row each row of `table` came from."""
        if self.job.transform is not None:
            table, invalid = self.job.transform.apply(table)
            dropped = [replace(parsed.row_source(row), reason=reason) for row, reason in invalid]
            rows = kept_rows(rows.size, invalid)
        if self.job.processor is not None:
            cp = self.checkpoint
            table, refused = self.job.processor.apply(
                table, cp.chunk_index, (block.offset, block.end), block.line
            )
            dropped += [
                replace(parsed.row_source(int(rows[row])), reason=reason) for row, reason in refused
            ]
        accepted, rejected = parsed.accounted(len(block.data), dropped)
        rejects = sorted(parsed.rejects + dropped, key=lambda r: r.line)
        if self.job.sink_format == "jsonl" and self.job.processor is None:
            lines = jsonl_lines(table)
            return BlockOutput(table.num_rows, rejects, accepted, rejected, raw=lines)
        return BlockOutput(table.num_rows, rejects, accepted, rejected, table=table)

    def _write(self, done: ChunkDone) -> None:
        """A chunk that accepted no rows writes no part (manifest.py says why); its ledger
        entry still accounts for its bytes, so the manifest's totals add up."""
        index, data, rows, rejects = done.index, done.take_data(), done.rows, done.rejects
        sink, fmt = self.job.sink, self.job.sink_format
        part = None
        if rows:
            sink.put(part_name(index, fmt), data)
            part = PartFile.of(part_name(index, fmt), rows, data, done.sha256)
        rejects_file = None
        if rejects:
            writer = self._part(REJECT_SCHEMA)
            writer.write(
                pa.table(
                    [
                        pa.array([r.line for r in rejects], pa.int64()),
                        pa.array([r.reason for r in rejects], pa.string()),
                        pa.array([r.record for r in rejects], pa.string()),
                    ],
                    schema=REJECT_SCHEMA,
                )
            )
            rejects_data = writer.finish()
            sink.put(rejects_name(index, fmt), rejects_data)
            rejects_file = PartFile.of(
                rejects_name(index, fmt), len(rejects), rejects_data, writer.sha256
            )
        record = ChunkRecord(
            index,
            done.start,
            done.end,
            part,
            rejects_file,
            done.accepted_bytes,
            done.rejected_bytes,
        )
        sink.put(ledger_name(index), [record.to_json().encode()])

    @property
    def _output_schema(self) -> pa.Schema:
        processed = self.job.processor.schema if self.job.processor else None
        return processed or self._schema

    def _finish(self) -> None:
        cp = self.checkpoint
        finalize(
            self.job.sink,
            chunks=cp.chunk_index,
            source=self.job.source.url,
            fingerprint=cp.fingerprint,
            fmt=self.job.sink_format,
            columns=self._output_schema.names,
            source_range=(cp.header_end, cp.bytes_total),
        )
        self._commit(cp.evolve(done=True, updated_at=now_text()))
