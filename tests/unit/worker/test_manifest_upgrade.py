"""A job started by a worker older than byte accounting finishes under this one, honestly.

Such a worker wrote ledger entries and manifests without `bytes_accepted`/`bytes_rejected`
and wrote a part (empty) even for a chunk that accepted no rows. Resuming must succeed; the
manifest must not invent a split it never saw (those chunks count as `bytes_unverified`, the
four totals still add up to the source), and no empty part may remain in the finished sink.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from collectjob_worker.manifest import LEDGER_DIR, MANIFEST, SUCCESS, part_name
from unit.worker.readers import READERS

DATA = b"a,b\n1,2\nbad-record-1\n3,4\nbad-record-2\n5,6\n7,8\n"
HEADER_BYTES = 4
FORMATS = ("csv", "jsonl", "parquet")
EMPTY_PART = {"csv": b"a,b\n", "jsonl": b""}
"""What an older worker wrote for a chunk without rows (parquet: an empty table's file)."""


def _as_written_before_byte_accounting(record: dict, sink: Path, fmt: str) -> dict:
    """A ledger or manifest chunk entry as an older worker wrote it."""
    old = {k: v for k, v in record.items() if k not in ("bytes_accepted", "bytes_rejected")}
    if old["part"] is None:
        empty = EMPTY_PART.get(fmt) or (sink / "empty.parquet").read_bytes()
        name = part_name(old["index"], fmt)
        (sink / name).write_bytes(empty)
        old["part"] = {
            "path": name,
            "rows": 0,
            "size": len(empty),
            "sha256": hashlib.sha256(empty).hexdigest(),
        }
    return old


def _empty_parquet(sink: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"a": pa.array([], pa.string()), "b": pa.array([], pa.string())}),
        sink / "empty.parquet",
    )


def _check_finished(jobs, outputs, fmt: str, legacy_bytes: int) -> dict:
    sink = jobs.tmp / "sink"
    assert (sink / SUCCESS).exists()
    manifest = json.loads((sink / MANIFEST).read_text())
    assert manifest["version"] == 2
    totals = [manifest[k] for k in ("bytes_header", "bytes_accepted", "bytes_rejected")]
    assert sum(totals) + manifest["bytes_unverified"] == len(DATA)
    assert manifest["bytes_unverified"] == legacy_bytes
    unverified = [c for c in manifest["chunks"] if c["bytes_accepted"] is None]
    assert sum(c["source_end"] - c["source_start"] for c in unverified) == legacy_bytes
    listed = sorted(c["part"]["path"] for c in manifest["chunks"] if c["part"])
    assert listed == sorted(p.name for p in sink.glob("part-*"))
    assert all(c["part"]["rows"] > 0 for c in manifest["chunks"] if c["part"])
    expected = outputs.expected(DATA)
    assert manifest["rows"] == len(expected.rows) and manifest["rejected"] == 2
    assert outputs.values(sink, fmt, expected.header) == expected.rows
    for reader, read in READERS.items():
        assert read(sink, fmt, expected.header) == expected.rows, reader
    return manifest


@pytest.mark.parametrize("fmt", FORMATS)
def test_resume_from_a_ledger_written_before_byte_accounting(jobs, outputs, fmt) -> None:
    source = jobs.write(DATA)
    jobs.run_until(jobs.job(source, fmt=fmt, chunk_bytes=7), chunks=2)
    sink = jobs.tmp / "sink"
    _empty_parquet(sink)
    committed = jobs.state().chunk_index
    legacy = []
    for index in range(committed):
        entry = sink / LEDGER_DIR / f"{index:06d}.json"
        old = _as_written_before_byte_accounting(json.loads(entry.read_text()), sink, fmt)
        entry.write_text(json.dumps(old))
        legacy.append(old)
    (sink / "empty.parquet").unlink()
    assert any(old["part"]["rows"] == 0 for old in legacy), "no chunk of rejects to upgrade"

    jobs.run(jobs.job(source, fmt=fmt, chunk_bytes=7))

    legacy_bytes = sum(old["source_end"] - old["source_start"] for old in legacy)
    manifest = _check_finished(jobs, outputs, fmt, legacy_bytes)
    assert manifest["chunks"][committed]["bytes_accepted"] is not None


@pytest.mark.parametrize("fmt", FORMATS)
def test_finishing_from_a_manifest_written_before_byte_accounting(jobs, outputs, fmt) -> None:
    """An older worker wrote the manifest and removed the ledger, then stopped before
    `_SUCCESS` and `done`: the rerun rewrites the manifest with honest totals."""
    source = jobs.write(DATA)
    done = jobs.run(jobs.job(source, fmt=fmt, chunk_bytes=7))
    sink = jobs.tmp / "sink"
    _empty_parquet(sink)
    manifest = json.loads((sink / MANIFEST).read_text())
    old = {k: v for k, v in manifest.items() if not k.startswith("bytes_")} | {"version": 1}
    old["chunks"] = [_as_written_before_byte_accounting(c, sink, fmt) for c in old["chunks"]]
    (sink / "empty.parquet").unlink()
    (sink / MANIFEST).write_text(json.dumps(old))
    (sink / SUCCESS).unlink()
    store = jobs.job(source).store
    store.save(done.checkpoint.evolve(done=False), store.load().version)

    jobs.run(jobs.job(source, fmt=fmt, chunk_bytes=7))

    _check_finished(jobs, outputs, fmt, len(DATA) - HEADER_BYTES)
