"""The optional transform of a job (`spec.transform`): select, rename and validate columns.

Its JSON shape, which the CollectJob CRD schema mirrors (unknown keys are an error, so a typo
never silently disables a check):

    {
      "columns": [                     # required, at least one: the output columns, in order
        {
          "name": "customer_id",       # required: output column name, unique
          "from": "id",                # source header column; default: name
          "type": "integer",           # string (default) | integer | number | boolean | datetime
          "required": true,            # default false: an empty value is a reject
          "pattern": "^[0-9]{3,}$",    # RE2 syntax, must match the whole value
          "allowed": ["a", "b"],       # the value must be one of these strings
          "maxLength": 64,             # at most this many characters
          "format": "%Y-%m-%d"         # datetime only: strptime format; default ISO 8601
        }
      ]
    }

Columns not listed are dropped. A listed `from` column missing from the source header is a
permanent error (the header does not match the schema). Checks apply to the value as it stands
in the source, in the order required, maxLength, allowed, pattern, type; the first one that
fails rejects the row, with the reason. An empty value in a column that is not required skips
the checks: it stays "" for a string column and becomes null for a typed one.

Only a declared type converts values: integer -> int64, number -> float64, boolean -> bool
(true/false/1/0/yes/no, any case), datetime -> timestamp in UTC (values without an offset are
taken as UTC). String columns pass through unchanged. Nothing from the spec is ever executed:
patterns are RE2 (linear time, no backtracking), and there is no eval and no query language.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from collectjob_worker.errors import PermanentError

TYPES = ("string", "integer", "number", "boolean", "datetime")
COLUMN_KEYS = {"name", "from", "type", "required", "pattern", "allowed", "maxLength", "format"}
_INTEGER = r"^[+-]?[0-9]+$"
_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_ISO_DATETIME = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?)?"
    r"(Z|[+-][0-9]{2}:?[0-9]{2})?$"
)
_ZONED = r"(Z|[+-][0-9]{2}:?[0-9]{2})$"
_TRUE = ["true", "1", "yes"]
_FALSE = ["false", "0", "no"]
_ARROW_TYPES = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "datetime": pa.timestamp("us", tz="UTC"),
}


class TransformError(PermanentError):
    """The transform in the job's spec is invalid, or does not fit the source header."""


@dataclass(frozen=True)
class Column:
    name: str
    source: str
    type: str = "string"
    required: bool = False
    pattern: str | None = None
    allowed: tuple[str, ...] | None = None
    max_length: int | None = None
    format: str | None = None

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW_TYPES[self.type]

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> Column:
        if not isinstance(raw, Mapping):
            raise TransformError(f"{where} must be an object, got {type(raw).__name__}")
        unknown = sorted(set(raw) - COLUMN_KEYS)
        if unknown:
            raise TransformError(
                f"{where} has unknown keys {unknown}; known: {sorted(COLUMN_KEYS)}"
            )
        name = _string(raw.get("name"), f"{where}.name")
        type_ = raw.get("type", "string")
        if type_ not in TYPES:
            raise TransformError(f"{where}.type is {type_!r}, expected one of {', '.join(TYPES)}")
        required = raw.get("required", False)
        if not isinstance(required, bool):
            raise TransformError(f"{where}.required must be true or false, got {required!r}")
        pattern = raw.get("pattern")
        if pattern is not None:
            _check_pattern(_string(pattern, f"{where}.pattern"), f"{where}.pattern")
        allowed = raw.get("allowed")
        if allowed is not None:
            if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
                raise TransformError(f"{where}.allowed must be a list of strings")
            allowed = tuple(allowed)
        max_length = raw.get("maxLength")
        if max_length is not None and (
            not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 0
        ):
            raise TransformError(f"{where}.maxLength must be a non-negative integer")
        fmt = raw.get("format")
        if fmt is not None:
            fmt = _string(fmt, f"{where}.format")
            if type_ != "datetime":
                raise TransformError(f"{where}.format applies only to type datetime")
        source = _string(raw.get("from", name), f"{where}.from")
        return cls(name, source, type_, required, pattern, allowed, max_length, fmt)

    def failures(self, values: pa.Array, present: np.ndarray) -> list[tuple[np.ndarray, str]]:
        """Rows failing each check, in check order, with the reason (without the value)."""
        found: list[tuple[np.ndarray, str]] = []
        if self.required:
            found.append((~present, "is required but empty"))
        if self.max_length is not None:
            too_long = _mask(pc.greater(pc.utf8_length(values), self.max_length)) & present
            found.append((too_long, f"is longer than {self.max_length} characters"))
        if self.allowed is not None:
            allowed = _mask(pc.is_in(values, value_set=pa.array(self.allowed, pa.string())))
            found.append((present & ~allowed, f"is not one of {list(self.allowed)}"))
        if self.pattern is not None:
            matches = _mask(pc.match_substring_regex(values, f"^(?:{self.pattern})$"))
            found.append((present & ~matches, f"does not match pattern {self.pattern!r}"))
        return found

    def convert(self, values: pa.Array, present: np.ndarray) -> tuple[pa.Array, np.ndarray]:
        """The output column, and the rows whose present value is not of the declared type."""
        if self.type == "string":
            return values, np.zeros(len(values), bool)
        return _CONVERTERS[self.type](self, values, present)


@dataclass(frozen=True)
class Transform:
    columns: tuple[Column, ...]

    @classmethod
    def from_dict(cls, raw: Any) -> Transform:
        if not isinstance(raw, Mapping):
            raise TransformError(f"transform must be an object, got {type(raw).__name__}")
        unknown = sorted(set(raw) - {"columns"})
        if unknown:
            raise TransformError(f"transform has unknown keys {unknown}; known: ['columns']")
        columns = raw.get("columns")
        if not isinstance(columns, list) or not columns:
            raise TransformError("transform.columns must be a non-empty list")
        parsed = tuple(
            Column.from_dict(c, f"transform.columns[{i}]") for i, c in enumerate(columns)
        )
        dupes = [n for n, k in Counter(c.name for c in parsed).items() if k > 1]
        if dupes:
            raise TransformError(f"transform.columns names must be unique; repeated: {dupes}")
        return cls(parsed)

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([(c.name, c.arrow_type) for c in self.columns])

    def check_header(self, header: list[str]) -> None:
        counts = Counter(header)
        missing = [c.source for c in self.columns if c.source not in counts]
        if missing:
            raise TransformError(
                f"source header does not match the transform: missing column(s) "
                f"{', '.join(map(repr, missing))}; the header has {header}"
            )
        ambiguous = sorted({c.source for c in self.columns if counts[c.source] > 1})
        if ambiguous:
            raise TransformError(
                f"source header names {ambiguous} more than once, so the transform "
                "cannot tell which column to take"
            )

    def apply(self, table: pa.Table) -> tuple[pa.Table, list[tuple[int, str]]]:
        """Validate and reshape a string table: the accepted rows, and (row, reason) rejects."""
        bad = np.zeros(table.num_rows, bool)
        reasons: dict[int, str] = {}
        outputs = []
        for column in self.columns:
            values = table.column(column.source).combine_chunks()
            present = _mask(pc.greater(pc.binary_length(values), 0))
            converted, wrong_type = column.convert(values, present)
            checks = column.failures(values, present)
            checks.append((wrong_type, f"is not a valid {column.type}"))
            for failed, reason in checks:
                for row in np.flatnonzero(failed & ~bad):
                    value = _shorten(values[int(row)].as_py())
                    reasons[int(row)] = f"column {column.name!r}: value {value!r} {reason}"
                bad |= failed
            outputs.append(converted)
        result = pa.Table.from_arrays(outputs, schema=self.schema)
        if bad.any():
            result = result.filter(pa.array(~bad))
        return result, sorted(reasons.items())


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise TransformError(f"{where} must be a non-empty string, got {value!r}")
    return value


def _check_pattern(pattern: str, where: str) -> None:
    try:
        pc.match_substring_regex(pa.array([""], pa.string()), f"^(?:{pattern})$")
    except pa.ArrowInvalid as e:
        raise TransformError(f"{where} is not a valid RE2 regular expression: {e}") from None


def _mask(result: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(result.fill_null(False).to_numpy(zero_copy_only=False), bool)


def _shorten(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def _cast_each(values: pa.Array, candidates: np.ndarray, target: pa.DataType) -> pa.Array:
    """Cast the candidate rows, nulls elsewhere; values that fail to cast become null too."""
    masked = pc.if_else(pa.array(candidates), values, pa.scalar(None, pa.string()))
    try:
        return pc.cast(masked, target)
    except pa.ArrowInvalid:
        values_ = masked.to_pylist()
        return pa.array([_cast_one(v, target) if v is not None else None for v in values_], target)


def _cast_one(value: str, target: pa.DataType) -> Any:
    try:
        return pc.cast(pa.array([value], pa.string()), target)[0].as_py()
    except pa.ArrowInvalid:
        return None


def _numeric(pattern: str, target: pa.DataType) -> Converter:
    def convert(
        column: Column, values: pa.Array, present: np.ndarray
    ) -> tuple[pa.Array, np.ndarray]:
        shaped = present & _mask(pc.match_substring_regex(values, pattern))
        unsigned = pc.replace_substring_regex(values, r"^\+", "")
        result = _cast_each(unsigned, shaped, target)
        return result, present & _mask(pc.is_null(result))

    return convert


def _boolean(column: Column, values: pa.Array, present: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    lowered = pc.utf8_lower(values)
    true = _mask(pc.is_in(lowered, value_set=pa.array(_TRUE)))
    false = _mask(pc.is_in(lowered, value_set=pa.array(_FALSE)))
    known = present & (true | false)
    return pa.array(true, mask=~known), present & ~known


def _datetime(column: Column, values: pa.Array, present: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    utc = pa.timestamp("us", tz="UTC")
    if column.format is not None:
        masked = pc.if_else(pa.array(present), values, pa.scalar(None, pa.string()))
        naive = pc.strptime(masked, format=column.format, unit="us", error_is_null=True)
        result = pc.cast(naive, utc)
    else:
        shaped = present & _mask(pc.match_substring_regex(values, _ISO_DATETIME))
        zoned = _mask(pc.match_substring_regex(values, _ZONED))
        as_zoned = _cast_each(values, shaped & zoned, utc)
        as_naive = pc.cast(_cast_each(values, shaped & ~zoned, pa.timestamp("us")), utc)
        result = pc.if_else(pa.array(zoned), as_zoned, as_naive)
    return result, present & _mask(pc.is_null(result))


Converter = Callable[[Column, pa.Array, np.ndarray], tuple[pa.Array, np.ndarray]]
_CONVERTERS: dict[str, Converter] = {
    "integer": _numeric(_INTEGER, pa.int64()),
    "number": _numeric(_NUMBER, pa.float64()),
    "boolean": _boolean,
    "datetime": _datetime,
}
