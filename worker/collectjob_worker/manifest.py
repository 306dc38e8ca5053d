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

On success the sink holds exactly what the manifest lists: leftover temporary files, ledger
entries and parts from any abandoned attempt are removed. Files the worker did not create
(names outside this layout) are left alone.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from collectjob_worker.errors import PermanentError
from collectjob_worker.sinks import TEMP_PREFIX, SinkStore

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
LEDGER_DIR = "_ledger"
REJECTS_DIR = "rejects"
_OURS = re.compile(
    rf"^(({REJECTS_DIR}/)?part-\d{{6,}}\.\w+|{LEDGER_DIR}/\d{{6,}}\.json"
    rf"|(.*/)?{re.escape(TEMP_PREFIX)}.*)$"
)


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


def finalize(
    sink: SinkStore, *, chunks: int, source: str, fingerprint: str, fmt: str, columns: list[str]
) -> Manifest:
    """Write the manifest from the ledger, remove everything else we wrote, then _SUCCESS.

    Safe to repeat after a crash at any point: an existing manifest for the same source and
    chunk count is reused, since the ledger it was built from may already be gone.
    """
    manifest = _existing(sink, chunks, fingerprint)
    if manifest is None:
        records = [_ledger_entry(sink, i) for i in range(chunks)]
        manifest = Manifest(
            source=source,
            fingerprint=fingerprint,
            format=fmt,
            columns=columns,
            rows=sum(r.part.rows for r in records),
            rejected=sum(r.rejects.rows for r in records if r.rejects),
            chunks=records,
        )
        sink.put(MANIFEST, [manifest.to_json().encode()])
    keep = manifest.files | {MANIFEST, SUCCESS}
    sink.delete([n for n in sink.list() if n not in keep and _OURS.match(n)])
    sink.put(SUCCESS, [])
    return manifest


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


def _ledger_entry(sink: SinkStore, index: int) -> ChunkRecord:
    data = sink.get(ledger_name(index))
    if data is None:
        raise PermanentError(
            f"sink {sink.url} lost {ledger_name(index)}, the record of committed part {index}; "
            "the output can no longer be verified"
        )
    return ChunkRecord.from_dict(json.loads(data))
