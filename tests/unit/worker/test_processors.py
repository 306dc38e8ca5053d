"""The processor runner and the built-in processors, without a pipeline around them."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from collectjob_api.contract import ProcessConfig
from collectjob_worker.processors import (
    ChunkContext,
    ProcessorError,
    ProcessorRunner,
    installed_processors,
    load_processor,
)
from collectjob_worker.processors.runner import JobRef
from collectjob_worker.processors.state import ProcessorState, state_name
from collectjob_worker.sinks import FileSink

JOB = JobRef("orders", "team-a", "uid-1")


def table(**columns: list[str | None]) -> pa.Table:
    return pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()})


def runner(tmp_path, process, name="p", options=None, attempts=1, limit=1 << 20):
    spec = ProcessConfig(name, options or {}, limit)
    return ProcessorRunner(spec, JOB, attempts, processor=process)


def test_builtins_are_installed_entry_points():
    assert {"hash-columns", "drop-duplicates"} <= set(installed_processors())


def test_unknown_processor_lists_the_installed_ones():
    with pytest.raises(ProcessorError, match=r"'no-such' is not installed.*drop-duplicates"):
        load_processor("no-such")


def test_frame_is_arrow_backed_strings_and_context_describes_the_chunk(tmp_path):
    seen = {}

    def process(frame: pd.DataFrame, context: ChunkContext) -> pd.DataFrame:
        seen["dtype"] = frame["a"].dtype
        seen["key"] = context.idempotency_key
        seen["first_line"] = context.first_line
        seen["options"] = dict(context.options)
        return frame.assign(b=frame["a"].str.upper())

    r = runner(tmp_path, process, options={"x": 1})
    r.begin(3, FileSink(tmp_path.as_uri()))
    out, rejects = r.apply(table(a=["x", "y"]), 3, (100, 200), 7)
    assert str(seen["dtype"]) == "string[pyarrow]"
    assert seen["key"] == "uid-1/3/100-200"
    assert (seen["first_line"], seen["options"]) == (7, {"x": 1})
    assert out.column("b").to_pylist() == ["X", "Y"] and rejects == []


def test_rejected_rows_leave_the_output_with_their_position_and_reason(tmp_path):
    def process(frame, context):
        context.reject(frame[frame["a"] == "bad"], "a is bad")
        return frame

    out, rejects = runner(tmp_path, process).apply(table(a=["ok", "bad", "ok2"]), 0, (0, 9), 2)
    assert out.column("a").to_pylist() == ["ok", "ok2"]
    assert rejects == [(1, "a is bad")]


def test_a_row_dropped_without_a_reject_fails_the_chunk(tmp_path):
    with pytest.raises(ProcessorError, match="dropped 1 row"):
        runner(tmp_path, lambda f, c: f.iloc[1:]).apply(table(a=["1", "2"]), 0, (0, 4), 2)


def test_an_exception_is_retried_then_reported_with_type_and_bounded_message(tmp_path):
    calls = []

    def process(frame, context):
        calls.append(1)
        raise ValueError("boom " * 500)

    with pytest.raises(ProcessorError) as e:
        runner(tmp_path, process, attempts=3).apply(table(a=["1"]), 4, (10, 20), 5)
    assert len(calls) == 3
    text = str(e.value)
    assert "chunk 4" in text and "ValueError: boom" in text and len(text) < 800


def test_columns_must_stay_the_same_in_every_chunk(tmp_path):
    flip = iter([False, True])

    def process(frame, context):
        return frame.assign(extra="1") if next(flip) else frame

    r = runner(tmp_path, process)
    r.apply(table(a=["1"]), 0, (0, 2), 2)
    with pytest.raises(ProcessorError, match="same columns"):
        r.apply(table(a=["1"]), 1, (2, 4), 3)


def test_state_is_committed_per_chunk_and_a_redo_sees_the_first_attempts_state(tmp_path):
    def count(frame, context):
        total = int(context.state.get("n", b"0")) + len(frame)
        context.state["n"] = str(total).encode()
        return frame.assign(total=str(total))

    r = runner(tmp_path, count)
    for chunk in range(3):
        r.begin(chunk, FileSink(tmp_path.as_uri()))
        r.apply(table(a=["x", "y"]), chunk, (chunk, chunk + 1), 2)
        r.commit(chunk, FileSink(tmp_path.as_uri()))
    # A new process redoes chunk 2 (say, after a crash before the checkpoint commit).
    again = runner(tmp_path, count)
    again.begin(2, FileSink(tmp_path.as_uri()))
    out, _ = again.apply(table(a=["x", "y"]), 2, (2, 3), 2)
    assert out.column("total").to_pylist() == ["6", "6"]
    names = FileSink(tmp_path.as_uri()).list("_state")
    assert state_name(0) not in names and state_name(2) in names


def test_state_over_its_limit_fails_the_job_naming_the_limit(tmp_path):
    def grow(frame, context):
        context.state["big"] = b"x" * 2048
        return frame

    with pytest.raises(ProcessorError, match="limit of 1024 bytes"):
        runner(tmp_path, grow, limit=1024).apply(table(a=["1"]), 0, (0, 1), 2)


def test_state_encoding_round_trips_and_is_deterministic():
    state = ProcessorState({"b": b"2", "a": b"\x00\x01"})
    again = ProcessorState({"a": b"\x00\x01", "b": b"2"})
    assert state.to_bytes() == again.to_bytes()
    assert dict(ProcessorState.from_bytes(state.to_bytes())) == {"a": b"\x00\x01", "b": b"2"}


def test_hash_columns_is_hmac_sha256_of_the_named_columns(tmp_path, monkeypatch):
    import hashlib
    import hmac

    monkeypatch.setenv("PII_KEY", "k" * 32)
    hash_columns = load_processor("hash-columns")
    r = runner(tmp_path, hash_columns, options={"columns": ["email"], "keyEnv": "PII_KEY"})
    out, _ = r.apply(table(email=["a@x", None, "a@x"], n=["1", "2", "3"]), 0, (0, 1), 2)
    want = hmac.new(b"k" * 32, b"a@x", hashlib.sha256).hexdigest()
    assert out.column("email").to_pylist() == [want, None, want]
    assert out.column("n").to_pylist() == ["1", "2", "3"]


@pytest.mark.parametrize("key", ["", "short"])
def test_hash_columns_refuses_a_missing_or_weak_key(tmp_path, monkeypatch, key):
    monkeypatch.setenv("PII_KEY", key)
    r = runner(
        tmp_path, load_processor("hash-columns"), options={"columns": ["a"], "keyEnv": "PII_KEY"}
    )
    with pytest.raises(ProcessorError, match="PII_KEY is missing or shorter"):
        r.apply(table(a=["1"]), 0, (0, 1), 2)


def test_drop_duplicates_keeps_the_first_row_of_each_key_across_chunks(tmp_path):
    options = {"columns": ["id"]}
    r = runner(tmp_path, load_processor("drop-duplicates"), options=options)
    r.begin(0, FileSink(tmp_path.as_uri()))
    out, rejects = r.apply(table(id=["1", "2", "1"], v=["a", "b", "c"]), 0, (0, 1), 2)
    r.commit(0, FileSink(tmp_path.as_uri()))
    assert out.column("v").to_pylist() == ["a", "b"] and rejects == [(2, "duplicate key (id)")]
    fresh = runner(tmp_path, load_processor("drop-duplicates"), options=options)
    fresh.begin(1, FileSink(tmp_path.as_uri()))
    out, rejects = fresh.apply(table(id=["2", "3"], v=["d", "e"]), 1, (1, 2), 5)
    assert out.column("v").to_pylist() == ["e"] and [row for row, _ in rejects] == [0]


def test_drop_duplicates_fails_clearly_past_its_key_cap(tmp_path):
    r = runner(
        tmp_path, load_processor("drop-duplicates"), options={"columns": ["id"], "maxKeys": 2}
    )
    with pytest.raises(ProcessorError, match=r"3 distinct keys exceed options\.maxKeys=2"):
        r.apply(table(id=["1", "2", "3"]), 0, (0, 1), 2)
