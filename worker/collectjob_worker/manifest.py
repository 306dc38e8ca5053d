"""The sink's layout, the per-chunk ledger and the final manifest.

    part-000000.csv ...            one part per chunk that accepted rows; lexicographic order
                                   is source order (a chunk of rejects or blank lines only
                                   writes none: an empty JSON Lines file is unreadable to
                                   pyarrow and DuckDB, and no format needs it)
    rejects/part-000003.csv ...    rejected rows of a chunk (line, reason, record), if any
    _ledger/000000.json ...        what each committed chunk wrote (rows, sizes, checksums)
    _manifest.json                 on success: every part with rows and sha256
    _SUCCESS                       on success, written last

A chunk writes its parts, then its ledger entry, then the checkpoint commits it. The ledger
lets the manifest be built at the end without reading the parts again. Everything a chunk
writes is a function of the source bytes and the job's spec, so a chunk redone after a crash,
or the same chunk written by a fenced worker, produces identical objects.

On success the sink holds what the manifest lists (and the ownership marker). Cleaning up
deletes only what this job's own ledger names: the ledger entries themselves, the parts and
rejects that ledger entries beyond the last committed chunk recorded (an abandoned attempt),
the part and rejects names of a committed chunk whose entry records none (an earlier attempt
of that chunk, by a processor that is not deterministic or by an older worker that wrote
empty parts), and the worker's own temporary files. It lists only the three directories of
this layout, never recursively, and the sink is this job's (see ownership), so nothing else is
touched.

Ledgers and manifests written before byte accounting (no `bytes_accepted`/`bytes_rejected`)
are still finalised: their chunks' byte ranges must still follow each other without a gap,
but how each splits into accepted and rejected bytes was never recorded, so the manifest
counts those bytes as `bytes_unverified` (and the chunk's own counts as null) rather than
inventing a split. A committed empty part such a worker wrote is dropped from the manifest and
deleted, so every part in a finished sink holds at least one row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from collectjob_worker.errors import PermanentError
from collectjob_worker.sinks import SinkStore
from collectjob_worker.temporaries import temporary_pattern

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
LEDGER_DIR = "_ledger"
REJECTS_DIR = "rejects"
_LEDGER_ENTRY = re.compile(rf"{LEDGER_DIR}/(?P<index>\d{{6,}})\.json")
_TEMPORARY = re.compile(rf"(({REJECTS_DIR}|{LEDGER_DIR})/)?{temporary_pattern()}")


def part_name(index: int, fmt: str) -> str:
    return f"part-{index:06d}.{fmt}"


def rejects_name(index: int, fmt: str) -> str:
    return f"{REJECTS_DIR}/{part_name(index, fmt)}"


def ledger_name(index: int) -> str:
    return f"{LEDGER_DIR}/{index:06d}.json"


@dataclass(frozen=True)
class PartFile:
    path: str
    rows: int
    size: int
    sha256: str
    """Of the file's bytes, taken by the part's writer as it built them (formats.py)."""

    @classmethod
    def of(cls, path: str, rows: int, pieces: Sequence[bytes], sha256: str) -> PartFile:
        """The entry of a file made of `pieces`, whose hash its writer took."""
        return cls(path, rows, sum(map(len, pieces)), sha256)


@dataclass(frozen=True)
class ChunkRecord:
    """One committed chunk: the source byte range it covers and the files it wrote."""

    index: int
    source_start: int
    source_end: int
    part: PartFile | None
    """None when the chunk accepted no rows: it writes no part file."""
    rejects: PartFile | None = None
    bytes_accepted: int | None = None
    """Source bytes of the rows in `part` (and of blank lines between them); None in the
    entries of a worker older than byte accounting."""
    bytes_rejected: int | None = None
    """Source bytes of the records in `rejects`; the two add up to the chunk's length."""

    @property
    def accounted(self) -> bool:
        """Whether the writer recorded how the chunk's bytes split (see the module docstring)."""
        return self.bytes_accepted is not None and self.bytes_rejected is not None

    @property
    def length(self) -> int:
        return self.source_end - self.source_start

    @property
    def files(self) -> set[str]:
        return {f.path for f in (self.part, self.rejects) if f is not None}

    def without_empty_part(self) -> ChunkRecord:
        """The record with a zero-row part (written by an older worker) left out."""
        if self.part is None or self.part.rows:
            return self
        return replace(self, part=None)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict) -> ChunkRecord:
        part, rejects = raw["part"], raw.get("rejects")
        return cls(
            index=raw["index"],
            source_start=raw["source_start"],
            source_end=raw["source_end"],
            part=PartFile(**part) if part else None,
            rejects=PartFile(**rejects) if rejects else None,
            bytes_accepted=raw.get("bytes_accepted"),
            bytes_rejected=raw.get("bytes_rejected"),
        )


@dataclass(frozen=True)
class Manifest:
    source: str
    fingerprint: str
    format: str
    columns: list[str]
    rows: int
    rejected: int
    chunks: list[ChunkRecord]
    bytes_header: int = 0
    bytes_accepted: int = 0
    bytes_rejected: int = 0
    bytes_unverified: int = 0
    """Source bytes of chunks whose ledger entries predate byte accounting; the four add up
    to the source's size."""
    version: int = 2
    """2: a chunk without rows has `part: null`, and `bytes_unverified` is there. A version 1
    manifest, reused to finish a job, is written again as version 2."""

    @classmethod
    def of(cls, records: list[ChunkRecord], bytes_header: int, **about: Any) -> Manifest:
        """The manifest of committed chunks, with totals that never guess a split."""
        return cls(
            **about,
            rows=sum(r.part.rows for r in records if r.part),
            rejected=sum(r.rejects.rows for r in records if r.rejects),
            chunks=records,
            bytes_header=bytes_header,
            bytes_accepted=sum(r.bytes_accepted or 0 for r in records),
            bytes_rejected=sum(r.bytes_rejected or 0 for r in records),
            bytes_unverified=sum(r.length for r in records if not r.accounted),
        )

    @property
    def files(self) -> set[str]:
        return set().union(*(c.files for c in self.chunks))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        raw = json.loads(text)
        chunks = [ChunkRecord.from_dict(c) for c in raw.pop("chunks")]
        return cls(chunks=chunks, **raw)


def clear_success(sink: SinkStore) -> None:
    """A job starting from scratch first withdraws any earlier run's success markers."""
    sink.delete([n for n in sink.list() if n in (SUCCESS, MANIFEST)])


def _leftovers(sink: SinkStore, chunks: int, partless: set[str], keep: set[str]) -> list[str]:
    """What this job wrote and no longer needs (see the module docstring); `partless` are the
    part and rejects names of committed chunks that record none, deleted if present."""
    ledger = [n for n in sink.list(LEDGER_DIR) if _LEDGER_ENTRY.fullmatch(n)]
    recorded: set[str] = set(ledger)
    for name in ledger:
        match = _LEDGER_ENTRY.fullmatch(name)
        if match and int(match["index"]) >= chunks:
            record = _abandoned_entry(sink, name)
            if record is not None:
                recorded |= record.files
    listed = {n for d in ("", REJECTS_DIR) for n in sink.list(d)}
    temporary = {n for n in listed | set(sink.list(LEDGER_DIR)) if _TEMPORARY.fullmatch(n)}
    return sorted((recorded | temporary | (listed & partless)) - keep)


def finalize(
    sink: SinkStore,
    *,
    chunks: int,
    source: str,
    fingerprint: str,
    fmt: str,
    columns: list[str],
    source_range: tuple[int, int],
) -> Manifest:
    """Write the manifest from the ledger, remove everything else we wrote, then _SUCCESS.

    The committed chunks must cover `source_range` (the data after the header, to the end)
    without gap or overlap, each accounted for, or there is no success.

    Safe to repeat after a crash at any point: the chunks of an existing manifest for the same
    source and chunk count are reused, since the ledger they came from may already be gone
    (the manifest is written again only if it differs, e.g. one written before byte
    accounting).
    """
    existing = _existing(sink, chunks, fingerprint)
    records = existing.chunks if existing else [_ledger_entry(sink, i) for i in range(chunks)]
    _check_coverage(sink, records, source_range)
    records = [r.without_empty_part() for r in records]
    manifest = Manifest.of(
        records,
        bytes_header=source_range[0],
        source=source,
        fingerprint=fingerprint,
        format=fmt,
        columns=columns,
    )
    if manifest != existing:
        sink.put(MANIFEST, [manifest.to_json().encode()])
    partless = {n for r in records for n in _names(r.index, fmt) - r.files}
    sink.delete(_leftovers(sink, chunks, partless, manifest.files | {MANIFEST, SUCCESS}))
    sink.put(SUCCESS, [])
    return manifest


def _names(index: int, fmt: str) -> set[str]:
    return {part_name(index, fmt), rejects_name(index, fmt)}


def _check_coverage(
    sink: SinkStore, records: list[ChunkRecord], source_range: tuple[int, int]
) -> None:
    position, end = source_range
    for r in records:
        if r.source_start != position or (
            r.accounted and (r.bytes_accepted or 0) + (r.bytes_rejected or 0) != r.length
        ):
            raise PermanentError(
                f"sink {sink.url}: chunk {r.index} covers source bytes {r.source_start}-"
                f"{r.source_end} with {r.bytes_accepted} accepted and {r.bytes_rejected} "
                f"rejected bytes, expected to start at {position} and add up; not a success"
            )
        position = r.source_end
    if position != end:
        raise PermanentError(
            f"sink {sink.url}: the chunks end at source byte {position}, expected {end}"
        )


def _existing(sink: SinkStore, chunks: int, fingerprint: str) -> Manifest | None:
    data = sink.get(MANIFEST)
    if data is None:
        return None
    try:
        manifest = Manifest.from_json(data)
    except (ValueError, KeyError, TypeError):
        return None
    if manifest.fingerprint != fingerprint or len(manifest.chunks) != chunks:
        return None
    return manifest


def _abandoned_entry(sink: SinkStore, name: str) -> ChunkRecord | None:
    """The ledger entry of an abandoned attempt, or None if it cannot be read (then only the
    entry itself is removed, and the files it may have named are kept)."""
    data = sink.get(name)
    try:
        return ChunkRecord.from_dict(json.loads(data)) if data is not None else None
    except (ValueError, KeyError, TypeError):
        return None


def _ledger_entry(sink: SinkStore, index: int) -> ChunkRecord:
    data = sink.get(ledger_name(index))
    if data is None:
        raise PermanentError(
            f"sink {sink.url} lost {ledger_name(index)}, the record of committed part {index}; "
            "the output can no longer be verified"
        )
    return ChunkRecord.from_dict(json.loads(data))
