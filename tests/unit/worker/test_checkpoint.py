"""The checkpoint model's one parser, its size bound, and the local store around it."""

from __future__ import annotations

import hashlib
import json

import pytest

from collectjob_api.checkpoint import (
    MAX_CHECKPOINT_BYTES,
    MAX_COLUMNS,
    MAX_ERROR_CHARS,
    MAX_HEADER_BYTES,
    Checkpoint,
    CheckpointError,
)
from collectjob_api.redact import TRUNCATION_MARKER
from collectjob_worker.checkpoint_store import CheckpointTooLarge, FileCheckpointStore, serialize
from collectjob_worker.errors import PermanentError


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[1, 2]", "must be a JSON object, got list"),
        ('{"version": 2}', "format version 2 is not supported"),
        ('{"offset": -5}', "'offset' must be a non-negative integer, got -5"),
        ('{"offset": "10"}', "'offset' must be a non-negative integer, got '10'"),
        ('{"rows_processed": 1.5}', "'rows_processed' must be a non-negative integer"),
        ('{"epoch": true}', "'epoch' must be a non-negative integer, got True"),
        ('{"header": "a,b"}', "'header' must be a list of strings"),
        ('{"header": ["a", 1]}', "'header' must be a list of strings"),
        ('{"done": "yes"}', "'done' must be true or false"),
        ('{"error": null}', "'error' must be a string"),
    ],
)
def test_bad_checkpoints_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(CheckpointError) as caught:
        Checkpoint.from_json(text)
    assert message in str(caught.value)


def test_round_trip_ignores_unknown_keys_from_newer_writers() -> None:
    cp = Checkpoint(offset=10, header=["a", "b"], holder="pod-1", epoch=3, done=True)
    assert Checkpoint.from_json(cp.to_json()) == cp
    assert Checkpoint.from_json('{"offset": 4, "someday": 1}').offset == 4


def test_a_wide_job_with_a_long_error_stays_small() -> None:
    cp = Checkpoint(
        offset=10**12,
        rows_processed=10**10,
        bytes_total=10**12,
        fingerprint="etag=" + "f" * 64,
        header=[f"column_number_{i}" for i in range(100)],
        holder="collectjob-sample-worker-5d8f7c9b6-abcde",
        started_at="2024-01-01T00:00:00Z",
        updated_at="2024-01-01T00:00:00Z",
    ).with_error("x" * 10_000)
    assert len(cp.error) == MAX_ERROR_CHARS and cp.error.endswith(TRUNCATION_MARKER)
    assert len(cp.to_json().encode()) < MAX_CHECKPOINT_BYTES


def test_progress_ratio() -> None:
    assert Checkpoint().progress_ratio == 0.0
    assert Checkpoint(offset=25, bytes_total=100).progress_ratio == 0.25
    assert Checkpoint(offset=0, bytes_total=0, done=True).progress_ratio == 1.0


def test_corrupt_state_file_is_a_permanent_error_naming_the_file(tmp_path) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"offset": "nope"}')
    with pytest.raises(PermanentError, match=f"state file {state}.*'offset' must be"):
        FileCheckpointStore(state).load()


def test_a_state_file_that_is_not_utf8_is_a_permanent_error_naming_the_file(tmp_path) -> None:
    state = tmp_path / "state.json"
    state.write_bytes(b'{"holder": "w\xff"}')
    with pytest.raises(PermanentError, match=f"state file {state}.*not UTF-8 at byte 13"):
        FileCheckpointStore(state).load()


def test_a_version_is_the_hash_of_the_state_files_bytes_as_saved_or_found(tmp_path) -> None:
    """A state file written by any earlier worker keeps its version: it is its bytes' hash."""
    state = tmp_path / "state.json"
    state.write_text(Checkpoint(offset=7).to_json())
    store = FileCheckpointStore(state)
    found = store.load()
    assert found.version == hashlib.sha256(state.read_bytes()).hexdigest()[:16]
    saved = store.save(Checkpoint(offset=8), found.version)
    assert saved == hashlib.sha256(state.read_bytes()).hexdigest()[:16]


def test_file_store_versions_change_with_every_save(tmp_path) -> None:
    store = FileCheckpointStore(tmp_path / "state.json")
    empty = store.load()
    assert empty.version == "" and empty.checkpoint == Checkpoint()
    v1 = store.save(Checkpoint(offset=1), empty.version)
    v2 = store.save(Checkpoint(offset=2), v1)
    assert v1 != v2 and store.load() == type(empty)(Checkpoint(offset=2), v2)


@pytest.mark.parametrize(
    ("names", "limit"),
    [
        ([f"c{i}" for i in range(MAX_COLUMNS + 1)], f"{MAX_COLUMNS} \\(MAX_COLUMNS\\)"),
        (["x" * (MAX_HEADER_BYTES // 4)] * 5, f"{MAX_HEADER_BYTES} bytes \\(MAX_HEADER_BYTES\\)"),
    ],
)
def test_a_header_over_its_limit_fails_the_job_with_the_limit_recorded(
    jobs, names: list[str], limit: str
) -> None:
    source = jobs.write((",".join(names) + "\n" + ",".join("1" for _ in names) + "\n").encode())
    with pytest.raises(CheckpointTooLarge, match=limit):
        jobs.pipeline(jobs.job(source)).run()
    state = jobs.tmp / "state.json"
    recorded = Checkpoint.from_json(state.read_text())
    assert recorded.header == [] and "over the limit of" in recorded.error
    assert len(state.read_bytes()) < 4096


def test_a_header_at_its_limits_is_kept() -> None:
    names = [f"{i:04d}" for i in range(MAX_COLUMNS)]
    assert len(json.dumps(names, separators=(",", ":"))) <= MAX_HEADER_BYTES
    assert Checkpoint.from_json(serialize(Checkpoint(header=names), "test")).header == names


def test_a_checkpoint_over_its_size_limit_is_refused_before_writing(tmp_path) -> None:
    store = FileCheckpointStore(tmp_path / "state.json")
    huge = Checkpoint(fingerprint="etag=" + "e" * MAX_CHECKPOINT_BYTES)
    with pytest.raises(CheckpointTooLarge, match=f"limit of {MAX_CHECKPOINT_BYTES} bytes"):
        store.save(huge, "")
    assert not (tmp_path / "state.json").exists()
