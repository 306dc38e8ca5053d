"""The transform: parsed once from the spec, validating per column, never executing anything."""

from __future__ import annotations

import datetime as dt
import json
import random
import re

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from collectjob_worker.checkpoint_store import FileCheckpointStore
from collectjob_worker.errors import PermanentError
from collectjob_worker.transform import PatternCheck, Transform, TransformError


def _table(**columns: list[str]) -> pa.Table:
    return pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})


def _apply(columns: list[dict], **data: list[str]) -> tuple[list[dict], list[tuple[int, str]]]:
    table, rejects = Transform.from_dict({"columns": columns}).apply(_table(**data))
    return table.to_pylist(), rejects


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([], "transform must be an object"),
        ({"columns": []}, "transform.columns must be a non-empty list"),
        ({"columns": [{"name": "a"}], "query": "x"}, "unknown keys ['query']"),
        ({"columns": [{"name": "a", "maxlength": 3}]}, "unknown keys ['maxlength']"),
        ({"columns": [{"name": ""}]}, "columns[0].name must be a non-empty string"),
        ({"columns": [{"name": "a", "type": "int"}]}, "columns[0].type is 'int', expected one of"),
        ({"columns": [{"name": "a", "required": "yes"}]}, "required must be true or false"),
        ({"columns": [{"name": "a", "pattern": "(unclosed"}]}, "not a valid RE2"),
        ({"columns": [{"name": "a", "pattern": "(a)\\1"}]}, "not a valid RE2"),
        ({"columns": [{"name": "a", "allowed": "abc"}]}, "allowed must be a list of strings"),
        ({"columns": [{"name": "a", "maxLength": -1}]}, "maxLength must be a non-negative"),
        ({"columns": [{"name": "a", "format": "%Y"}]}, "format applies only to type datetime"),
        ({"columns": [{"name": "a"}, {"name": "a", "from": "b"}]}, "repeated: ['a']"),
    ],
)
def test_invalid_specs_are_refused_with_the_field_named(spec, message: str) -> None:
    with pytest.raises(TransformError) as caught:
        Transform.from_dict(spec)
    assert message in str(caught.value)
    assert isinstance(caught.value, PermanentError)


def test_select_and_rename_keep_values_as_strings() -> None:
    rows, rejects = _apply(
        [{"name": "zip", "from": "code"}, {"name": "id"}],
        id=["1", "2"],
        code=["007", " NA "],
        unused=["x", "y"],
    )
    assert rows == [{"zip": "007", "id": "1"}, {"zip": " NA ", "id": "2"}]
    assert rejects == []


def test_each_check_rejects_with_its_reason_in_order() -> None:
    column = {
        "name": "v",
        "required": True,
        "maxLength": 4,
        "allowed": ["ab", "abc", "zzzzz", "b1"],
        "pattern": "[a-z]+",
    }
    rows, rejects = _apply([column], v=["ab", "", "zzzzz", "abd", "b1", "abc"])
    assert rows == [{"v": "ab"}, {"v": "abc"}]
    assert rejects == [
        (1, "column 'v': value '' is required but empty"),
        (2, "column 'v': value 'zzzzz' is longer than 4 characters"),
        (3, "column 'v': value 'abd' is not one of ['ab', 'abc', 'zzzzz', 'b1']"),
        (4, "column 'v': value 'b1' does not match pattern '[a-z]+'"),
    ]


def test_pattern_must_match_the_whole_value() -> None:
    rows, rejects = _apply([{"name": "v", "pattern": "a|b"}], v=["a", "ab", "xa", "b"])
    assert [r["v"] for r in rows] == ["a", "b"]
    assert [i for i, _ in rejects] == [1, 2]


def _regex_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many values each RE2 call is given, from now on."""
    runs: list[int] = []
    original = pc.match_substring_regex

    def counted(values: pa.Array, pattern: str) -> pa.Array:
        runs.append(len(values))
        return original(values, pattern)

    monkeypatch.setattr(pc, "match_substring_regex", counted)
    return runs


def test_a_pattern_check_learns_whether_values_repeat_and_answers_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(5)
    kinds = ["12345", "1234", "123456", "x2345", "", "é1234", "12\n45", " 12345"]
    repeating = pa.array([rng.choice(kinds) for _ in range(400)], pa.string())
    unique = pa.array([f"{n}" if n % 3 else f"{n}x" for n in range(10000, 10400)], pa.string())
    check = PatternCheck("[0-9]{5}")

    def expected(values: pa.Array) -> list[bool]:
        return [re.fullmatch("[0-9]{5}", v) is not None for v in values.to_pylist()]

    runs = _regex_runs(monkeypatch)
    # Block 1 is encoded to learn; block 2 still is (the values repeated), which shows they no
    # longer do; then values are matched one by one until the PROBE_EVERY-th block.
    blocks = [repeating, unique] + [repeating] * (PatternCheck.PROBE_EVERY - 2) + [repeating]
    for values in blocks:
        assert check.matches(values).tolist() == expected(values)
    distinct = len(set(repeating.to_pylist()))
    one_by_one = [400] * (PatternCheck.PROBE_EVERY - 3)
    assert runs == [distinct, 400, *one_by_one, distinct, distinct]


def test_a_pattern_check_matches_values_with_nulls_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = _regex_runs(monkeypatch)
    values = pa.array(["12345", None, "12345", "abc"] * 10, pa.string())
    assert PatternCheck("[0-9]{5}").matches(values).tolist() == [True, False, True, False] * 10
    assert runs == [40]


def test_optional_empty_values_skip_checks_and_become_null_when_typed() -> None:
    rows, rejects = _apply(
        [{"name": "s", "pattern": "x+"}, {"name": "n", "type": "integer"}],
        s=["", "x"],
        n=["", "5"],
    )
    assert rows == [{"s": "", "n": None}, {"s": "x", "n": 5}]
    assert rejects == []


def test_integer() -> None:
    values = ["007", "+5", "-3", "9223372036854775807", "9223372036854775808", "1.0", "0x10", " 4"]
    rows, rejects = _apply([{"name": "n", "type": "integer"}], n=values)
    assert [r["n"] for r in rows] == [7, 5, -3, 9223372036854775807]
    assert [i for i, _ in rejects] == [4, 5, 6, 7]
    assert rejects[0][1] == "column 'n': value '9223372036854775808' is not a valid integer"


def test_integer_of_plain_digits_alone_rejects_only_what_does_not_fit() -> None:
    """Without a sign anywhere, one cast decides (transform._integer's fast path)."""
    values = ["007", "9223372036854775808", "", "42", "0"]
    rows, rejects = _apply([{"name": "n", "type": "integer"}], n=values)
    assert [r["n"] for r in rows] == [7, None, 42, 0]
    assert rejects == [(1, "column 'n': value '9223372036854775808' is not a valid integer")]


def test_number() -> None:
    values = ["1.5", "-2", "1e3", ".5", "+1.", "inf", "nan", "1,5", "abc"]
    rows, rejects = _apply([{"name": "x", "type": "number"}], x=values)
    assert [r["x"] for r in rows] == [1.5, -2.0, 1000.0, 0.5, 1.0]
    assert [i for i, _ in rejects] == [5, 6, 7, 8]


def _random_strings(alphabet: str, lengths: range, count: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    return ["".join(rnd.choices(alphabet, k=rnd.choice(lengths))) for _ in range(count)]


def _accepted_alone(column: dict, values: list[str]) -> list[object]:
    """Each value converted in a table of its own (None when rejected), so a value the
    one-cast fast path would wrongly accept cannot hide behind a neighbour that fails it."""
    converted = []
    for value in values:
        rows, _ = _apply([column], v=[value])
        converted.append(rows[0]["v"] if rows else None)
    return converted


def test_number_accepts_exactly_what_python_float_reads_among_number_characters() -> None:
    tricky = ["1-2", "+-1", "--1", "1e", "e1", ".", "-.", "1.2.3", "1e+", "+.5", "5.e3", "E5"]
    values = tricky + _random_strings("0123456789+-.eE", range(1, 7), 600, seed=12)

    def expected(value: str) -> float | None:
        try:
            return float(value)
        except ValueError:
            return None

    assert _accepted_alone({"name": "v", "type": "number"}, values) == [expected(v) for v in values]


def test_a_non_number_of_number_characters_rejects_only_its_own_row() -> None:
    rows, rejects = _apply([{"name": "x", "type": "number"}], x=["1.5", "1-2", "", "2e1", "+-1"])
    assert [r["x"] for r in rows] == [1.5, None, 20.0]
    assert [i for i, _ in rejects] == [1, 4]


def test_dates_alone_accept_exactly_iso_calendar_dates() -> None:
    variants = _random_strings("0123456789-T:Z+ ./", range(10, 11), 300, seed=5)
    mutated = ["2024-01-31"[:i] + c + "2024-01-31"[i + 1 :] for i in range(10) for c in "0-T/ "]
    values = ["2024-02-30", "2024-13-01", "2024-1-031", *variants, *mutated]

    def expected(value: str) -> dt.datetime | None:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            return None
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            return None
        return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)

    assert _accepted_alone({"name": "v", "type": "datetime"}, values) == [
        expected(v) for v in values
    ]


def test_a_bad_date_rejects_only_its_own_row_among_dates_alone() -> None:
    rows, rejects = _apply([{"name": "d", "type": "datetime"}], d=["2024-01-31", "2024-02-30", ""])
    assert [r["d"] for r in rows] == [dt.datetime(2024, 1, 31, tzinfo=dt.UTC), None]
    assert [i for i, _ in rejects] == [1]


def test_boolean() -> None:
    values = ["true", "FALSE", "1", "0", "Yes", "no", "maybe", "t"]
    rows, rejects = _apply([{"name": "b", "type": "boolean"}], b=values)
    assert [r["b"] for r in rows] == [True, False, True, False, True, False]
    assert [i for i, _ in rejects] == [6, 7]


def test_datetime_iso8601_in_utc() -> None:
    values = [
        "2024-03-01",
        "2024-03-01T04:05:06",
        "2024-03-01 04:05:06.5",
        "2024-03-01T04:05:06Z",
        "2024-03-01T04:05:06+02:00",
        "2024-13-01",
        "yesterday",
    ]
    rows, rejects = _apply([{"name": "t", "type": "datetime"}], t=values)
    utc = dt.UTC
    assert [r["t"] for r in rows] == [
        dt.datetime(2024, 3, 1, tzinfo=utc),
        dt.datetime(2024, 3, 1, 4, 5, 6, tzinfo=utc),
        dt.datetime(2024, 3, 1, 4, 5, 6, 500000, tzinfo=utc),
        dt.datetime(2024, 3, 1, 4, 5, 6, tzinfo=utc),
        dt.datetime(2024, 3, 1, 2, 5, 6, tzinfo=utc),
    ]
    assert [i for i, _ in rejects] == [5, 6]


def test_datetime_with_format() -> None:
    column = {"name": "d", "type": "datetime", "format": "%d/%m/%Y"}
    rows, rejects = _apply([column], d=["31/12/2023", "2023-12-31"])
    assert rows == [{"d": dt.datetime(2023, 12, 31, tzinfo=dt.UTC)}]
    assert [i for i, _ in rejects] == [1]


def test_a_row_is_rejected_once_with_its_first_failure() -> None:
    rows, rejects = _apply(
        [{"name": "a", "type": "integer"}, {"name": "b", "required": True}],
        a=["x", "1"],
        b=["", ""],
    )
    assert rows == []
    assert rejects == [
        (0, "column 'a': value 'x' is not a valid integer"),
        (1, "column 'b': value '' is required but empty"),
    ]


def test_header_mismatch_and_ambiguity() -> None:
    transform = Transform.from_dict({"columns": [{"name": "id"}, {"name": "x", "from": "y"}]})
    with pytest.raises(TransformError, match="missing column\\(s\\) 'y'; the header has"):
        transform.check_header(["id", "z"])
    with pytest.raises(TransformError, match="names \\['id'\\] more than once"):
        transform.check_header(["id", "y", "id"])
    transform.check_header(["y", "extra", "id"])


def test_pipeline_rejects_invalid_rows_with_source_lines(jobs, outputs) -> None:
    data = (
        b"id,amount,when\n1,10,2024-01-01\n"
        b'2,"ten\nthousand",2024-01-02\n3,30,nope\n4,40,2024-01-04\n'
    )
    transform = {
        "columns": [
            {"name": "id", "type": "integer", "required": True},
            {"name": "amount", "type": "number"},
            {"name": "day", "from": "when", "type": "datetime"},
        ]
    }
    for fmt in ("csv", "parquet", "jsonl"):
        sink = jobs.tmp / f"sink-{fmt}"
        state = jobs.tmp / f"state-{fmt}.json"
        job = jobs.job(
            jobs.write(data),
            fmt=fmt,
            chunk_bytes=16,
            transform=transform,
            sink=sink,
            store=FileCheckpointStore(state),
        )
        jobs.run(job)
        _, rows = outputs.parts(sink, fmt)
        assert [str(r["id"]) for r in rows] == ["1", "4"]
        rejects = outputs.rejects(sink, fmt)
        assert [(int(r["line"]), r["record"]) for r in rejects] == [
            (3, '2,"ten\nthousand",2024-01-02'),
            (5, "3,30,nope"),
        ]
        assert "not a valid number" in rejects[0]["reason"]
        manifest = json.loads((sink / "_manifest.json").read_text())
        assert manifest["columns"] == ["id", "amount", "day"]
        assert (manifest["rows"], manifest["rejected"]) == (2, 2)


def test_transform_rejects_keep_their_lines_next_to_other_rejects(jobs, outputs) -> None:
    data = b'id,v\n1,ok\n2,bad\xff\n3,too,many\nx,"multi\nline"\n\n5,ok\ny,last\n'
    transform = {"columns": [{"name": "id", "type": "integer"}, {"name": "v"}]}
    jobs.run(jobs.job(jobs.write(data), fmt="jsonl", transform=transform))
    assert [r["id"] for r in outputs.parts(jobs.tmp / "sink", "jsonl")[1]] == [1, 5]
    rejects = outputs.rejects(jobs.tmp / "sink", "jsonl")
    assert [(r["line"], r["record"]) for r in rejects] == [
        (3, "2,bad\ufffd"),
        (4, "3,too,many"),
        (5, 'x,"multi\nline"'),
        (9, "y,last"),
    ]
    assert rejects[0]["reason"].startswith("not valid utf-8")
    assert rejects[2]["reason"] == "column 'id': value 'x' is not a valid integer"
