"""The sink's layout, the per-chunk ledger and the final manifest.

    part-000000.csv ...            one part per chunk; lexicographic order is source order
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
and the worker's own temporary files. It lists only the three directories of this layout,
never recursively, and the sink is this job's (see ownership), so nothing else is touched.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

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

    @classmethod
    def of(cls, path: str, rows: int, pieces: Sequence[bytes]) -> PartFile:
        digest = hashlib.sha256()
        for piece in pieces:
            digest.update(piece)
        return cls(path, rows, sum(map(len, pieces)), digest.hexdigest())


@dataclass(frozen=True)
class ChunkRecord:
    """One committed chunk: the source byte range it covers and the files it wrote."""

    index: int
    source_start: int
    source_end: int
    part: PartFile
    rejects: PartFile | None = None
    bytes_accepted: int = 0
    """Source bytes of the rows in `part` (and of blank lines between them)."""
    bytes_rejected: int = 0
    """Source bytes of the records in `rejects`; the two add up to the chunk's length."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict) -> ChunkRecord:
        rejects = raw.get("rejects")
        return cls(
            index=raw["index"],
            source_start=raw["source_start"],
            source_end=raw["source_end"],
            part=PartFile(**raw["part"]),
            rejects=PartFile(**rejects) if rejects else None,
            bytes_accepted=raw.get("bytes_accepted", 0),
            bytes_rejected=raw.get("bytes_rejected", 0),
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
    """The three add up to the source's size."""
    version: int = 1

    @property
    def files(self) -> set[str]:
        found = {c.part.path for c in self.chunks}
        found |= {c.rejects.path for c in self.chunks if c.rejects}
        return found

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


def _leftovers(sink: SinkStore, chunks: int, keep: set[str]) -> list[str]:
    """What this job wrote and no longer needs (see the module docstring)."""
    ledger = [n for n in sink.list(LEDGER_DIR) if _LEDGER_ENTRY.fullmatch(n)]
    recorded: set[str] = set(ledger)
    for name in ledger:
        match = _LEDGER_ENTRY.fullmatch(name)
        if match and int(match["index"]) >= chunks:
            record = _abandoned_entry(sink, name)
            if record is not None:
                recorded |= {record.part.path} | (
                    {record.rejects.path} if record.rejects else set()
                )
    temporary = {
        n for d in ("", REJECTS_DIR, LEDGER_DIR) for n in sink.list(d) if _TEMPORARY.fullmatch(n)
    }
    return sorted((recorded | temporary) - keep)


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

    Safe to repeat after a crash at any point: an existing manifest for the same source and
    chunk count is reused, since the ledger it was built from may already be gone.
    """
    manifest = _existing(sink, chunks, fingerprint)
    if manifest is None:
        records = [_ledger_entry(sink, i) for i in range(chunks)]
        _check_coverage(sink, records, source_range)
        manifest = Manifest(
            source=source,
            fingerprint=fingerprint,
            format=fmt,
            columns=columns,
            rows=sum(r.part.rows for r in records),
            rejected=sum(r.rejects.rows for r in records if r.rejects),
            chunks=records,
            bytes_header=source_range[0],
            bytes_accepted=sum(r.bytes_accepted for r in records),
            bytes_rejected=sum(r.bytes_rejected for r in records),
        )
        sink.put(MANIFEST, [manifest.to_json().encode()])
    sink.delete(_leftovers(sink, chunks, manifest.files | {MANIFEST, SUCCESS}))
    sink.put(SUCCESS, [])
    return manifest


def _check_coverage(
    sink: SinkStore, records: list[ChunkRecord], source_range: tuple[int, int]
) -> None:
    position, end = source_range
    for r in records:
        if r.source_start != position or r.bytes_accepted + r.bytes_rejected != (
            r.source_end - r.source_start
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
