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

import functools
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic.dataclasses import dataclass

from collectjob_api.models import (
    CAMEL_CASE,
    Closed,
    Count,
    Flag,
    Name,
    StringTuple,
    keys,
    one_of,
    parse,
    refuse,
    under,
)
from collectjob_worker.arrowstrings import lengths
from collectjob_worker.errors import PermanentError

TYPES = ("string", "integer", "number", "boolean", "datetime")
_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_NUMBER_CHARACTERS = "0123456789+-.eE"
_ISO_DATETIME = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?)?"
    r"(Z|[+-][0-9]{2}:?[0-9]{2})?$"
)
_ZONED = r"(Z|[+-][0-9]{2}:?[0-9]{2})$"
_DATE_LENGTH = len("2024-01-31")
_UTC = pa.timestamp("us", tz="UTC")
_TRUE = ["true", "1", "yes"]
_FALSE = ["false", "0", "no"]
_ARROW_TYPES = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "datetime": _UTC,
}


class TransformError(PermanentError):
    """The transform in the job's spec is invalid, or does not fit the source header."""


class PatternCheck:
    """Which values of a column match its pattern as a whole, by RE2.

    RE2 costs about 40 ns a value, however short. Where values repeat (codes, countries,
    statuses), matching each distinct value once and spreading the answers over the rows
    costs a dictionary encoding instead, about 20 ns a short value: on the bench's `code`
    column (1,000 distinct values in each block of 11,500 rows) 0.054 s of CPU a run against
    0.085 s. On values that do not repeat (ids, e-mails) it costs twice the direct way.

    So the check learns. A block it encoded tells how many of its values were distinct; the
    next block is encoded too if at most REPEATING_SHARE were, else matched value by value,
    and every PROBE_EVERY-th block is encoded again in case the values have changed. A value
    matches or not whatever its neighbours, so the answer is the same either way and only its
    cost depends on what was learnt: parser threads share one check without a lock."""

    REPEATING_SHARE = 0.25
    PROBE_EVERY = 64

    def __init__(self, pattern: str) -> None:
        self.regex = f"^(?:{pattern})$"
        self._repeating = True
        """What the last encoded block showed; the first block is encoded, to learn."""
        self._blocks = 0

    def matches(self, values: pa.Array) -> np.ndarray:
        self._blocks += 1
        probe = self._blocks % self.PROBE_EVERY == 0
        if values.null_count or not (self._repeating or probe):
            return _mask(pc.match_substring_regex(values, self.regex))
        encoded = values.dictionary_encode()
        distinct = encoded.dictionary
        self._repeating = len(distinct) <= self.REPEATING_SHARE * len(values)
        matched = _mask(pc.match_substring_regex(distinct, self.regex))
        return matched[encoded.indices.to_numpy()]


def _re2(pattern: str | None) -> str | None:
    if pattern is not None:
        try:
            pc.match_substring_regex(pa.array([""], pa.string()), f"^(?:{pattern})$")
        except pa.ArrowInvalid as e:
            raise refuse("is not a valid RE2 regular expression: {reason}", reason=str(e)) from None
    return pattern


@dataclass(frozen=True, config=CAMEL_CASE)
class Column(Closed):
    name: Name
    type: Annotated[str, one_of(TYPES)] = "string"
    required: Flag = False
    pattern: Annotated[Name | None, AfterValidator(_re2)] = None
    allowed: StringTuple | None = None
    max_length: Count | None = None
    format: Name | None = None
    from_: Annotated[Name | None, Field(alias="from")] = None

    @field_validator("format")
    @classmethod
    def _only_for_datetimes(cls, fmt: str | None, info: ValidationInfo) -> str | None:
        if fmt is not None and info.data.get("type") != "datetime":
            raise refuse("applies only to type datetime")
        return fmt

    @property
    def source(self) -> str:
        """The source header column: `from`, or the column's own name."""
        return self.from_ or self.name

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW_TYPES[self.type]

    @property
    def passes_through(self) -> bool:
        """A string column with no check: its values are the output as they stand. (Finding
        the empty ones for nothing cost a tenth of the bench's typed transform.)"""
        return self.type == "string" and not (
            self.required
            or self.max_length is not None
            or self.allowed is not None
            or self.pattern is not None
        )

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
            matches = self._pattern_check.matches(values)
            found.append((present & ~matches, f"does not match pattern {self.pattern!r}"))
        return found

    @functools.cached_property
    def _pattern_check(self) -> PatternCheck:
        """The column's check, with what it learns about the values over a job (cached in the
        instance's own dictionary: the spec's fields, its equality and its form are as they
        were)."""
        assert self.pattern is not None
        return PatternCheck(self.pattern)

    def convert(self, values: pa.Array, present: np.ndarray) -> tuple[pa.Array, np.ndarray]:
        """The output column, and the rows whose present value is not of the declared type."""
        if self.type == "string":
            return values, np.zeros(len(values), bool)
        result = _CONVERTERS[self.type](self, values, present)
        if not result.null_count:
            return result, np.zeros(len(values), bool)
        return result, present & _mask(pc.is_null(result))


COLUMN_KEYS = keys(Column)
"""A column's keys as the spec spells them; the CRD schema lists the same."""


def _non_empty_list(value: Any) -> Any:
    if not isinstance(value, list | tuple) or not value:
        raise refuse("must be a non-empty list")
    return value


@dataclass(frozen=True)
class Transform(Closed):
    columns: Annotated[tuple[Column, ...], BeforeValidator(_non_empty_list)]

    @field_validator("columns")
    @classmethod
    def _unique_names(cls, columns: tuple[Column, ...]) -> tuple[Column, ...]:
        dupes = [n for n, k in Counter(c.name for c in columns).items() if k > 1]
        if dupes:
            raise refuse("names must be unique; repeated: {dupes}", dupes=str(dupes))
        return columns

    @classmethod
    def from_dict(cls, raw: Any) -> Transform:
        return parse(cls, raw, TransformError, under("transform"))

    @functools.cached_property
    def schema(self) -> pa.Schema:
        """A string column is never null, as the parser makes none (see BlockParser.schema);
        a typed one is null where its value is empty. Built once: every block's table takes
        it."""
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=c.type != "string") for c in self.columns]
        )

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
            values = _whole(table.column(column.source))
            if column.passes_through:
                outputs.append(values)
                continue
            present = lengths(values) > 0
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


def _whole(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array: its only chunk as it is (a parsed block has one), since
    `combine_chunks` copies even that, holding the GIL."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _mask(result: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean result as a numpy mask, null counting as False."""
    if result.null_count:
        result = result.fill_null(False)
    return np.asarray(result.to_numpy(zero_copy_only=False), bool)


def _shorten(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def _cast_each(
    values: pa.Array,
    candidates: np.ndarray,
    target: pa.DataType,
    cast: Callable[[pa.Array, pa.DataType], pa.Array] | None = None,
) -> pa.Array:
    """Cast the candidate rows, nulls elsewhere. By default values that fail to cast become
    null too; with `cast=pc.cast` such a value raises ArrowInvalid instead (a fast path that
    gives up)."""
    cast = cast or _cast_or_null
    if not candidates.any():
        return pa.nulls(len(values), target)
    if candidates.all():
        return cast(values, target)
    masked = pc.if_else(pa.array(candidates), values, pa.scalar(None, pa.string()))
    return cast(masked, target)


def _cast_or_null(values: pa.Array, target: pa.DataType) -> pa.Array:
    """One cast for the whole array; where a value that has the right shape still does not
    cast (an integer beyond int64, 30 February), the array is halved around it, so k such
    values cost about k * log2(n) casts of ever smaller slices, never one per row."""
    try:
        return pc.cast(values, target)
    except pa.ArrowInvalid:
        if len(values) == 1:
            return pa.nulls(1, target)
        half = len(values) // 2
        return pa.concat_arrays(
            [
                _cast_or_null(values.slice(0, half), target),
                _cast_or_null(values.slice(half), target),
            ]
        )


def _integer_shape(values: pa.Array) -> np.ndarray:
    """Whether each value is `[+-]?[0-9]+`: at most one sign, then ASCII digits (a quarter of
    the time of that regex; the shape matters because the cast also reads hex, `0x10`)."""
    digits = pc.ascii_ltrim(values, "+-")
    signs = lengths(values) - lengths(digits)
    return _mask(pc.ascii_is_decimal(digits)) & (signs <= 1)


def _integer(column: Column, values: pa.Array, present: np.ndarray) -> pa.Array:
    digits = _mask(pc.ascii_is_decimal(values))
    if (digits | ~present).all():
        # Plain ASCII digits wherever there is a value, the common case: no sign to strip
        # and no other shape to check, so the cast alone decides (the bench's ids: 30 ms
        # instead of 56).
        return _cast_each(values, present, pa.int64())
    shaped = present & _integer_shape(values)
    if _mask(pc.starts_with(values, "+")).any():
        values = pc.replace_substring_regex(values, r"^\+", "")
    return _cast_each(values, shaped, pa.int64())


def _number(column: Column, values: pa.Array, present: np.ndarray) -> pa.Array:
    """Among strings made only of `_NUMBER_CHARACTERS`, Arrow's float parser accepts exactly
    those of the `_NUMBER` shape (a unit test pins it). So a character check and one cast do
    the regex's work in a third of its time. When such a value is still no number ("1-2"),
    that cast fails as a whole and the regex judges each value, as it always did."""
    others = pc.ascii_trim(values, _NUMBER_CHARACTERS)
    plain = present & (lengths(others) == 0)
    try:
        return _cast_each(values, plain, pa.float64(), cast=pc.cast)
    except pa.ArrowInvalid:
        shaped = present & _mask(pc.match_substring_regex(values, _NUMBER))
        return _cast_each(values, shaped, pa.float64())


def _boolean(column: Column, values: pa.Array, present: np.ndarray) -> pa.Array:
    lowered = pc.utf8_lower(values)
    true = _mask(pc.is_in(lowered, value_set=pa.array(_TRUE)))
    false = _mask(pc.is_in(lowered, value_set=pa.array(_FALSE)))
    known = present & (true | false)
    return pa.array(true, mask=~known)


def _datetime(column: Column, values: pa.Array, present: np.ndarray) -> pa.Array:
    if column.format is not None:
        masked = pc.if_else(pa.array(present), values, pa.scalar(None, pa.string()))
        naive = pc.strptime(masked, format=column.format, unit="us", error_is_null=True)
        return pc.cast(naive, _UTC)
    dates = _dates_alone(values, present)
    return _iso_datetimes(values, present) if dates is None else dates


def _dates_alone(values: pa.Array, present: np.ndarray) -> pa.Array | None:
    """A column of dates without times, the common case, in one cast and no regex: of the
    strings as long as `2024-01-31`, Arrow's ISO 8601 parser accepts exactly the date shape
    (a unit test pins it), and a date alone has no zone. None when some present value has
    another length or does not cast (30 February): `_iso_datetimes` then judges each."""
    sized = lengths(values) == _DATE_LENGTH
    if not (sized | ~present).all():
        return None
    try:
        return pc.cast(_cast_each(values, present, pa.timestamp("us"), cast=pc.cast), _UTC)
    except pa.ArrowInvalid:
        return None


def _iso_datetimes(values: pa.Array, present: np.ndarray) -> pa.Array:
    shaped = present & _mask(pc.match_substring_regex(values, _ISO_DATETIME))
    # A value of the ISO shape that is no longer than a date is a date alone: no zone.
    longer = shaped & (lengths(values) > _DATE_LENGTH)
    zoned = _mask(pc.match_substring_regex(values, _ZONED)) if longer.any() else longer
    as_naive = pc.cast(_cast_each(values, shaped & ~zoned, pa.timestamp("us")), _UTC)
    if (shaped & zoned).any():
        as_zoned = _cast_each(values, shaped & zoned, _UTC)
        return pc.if_else(pa.array(zoned), as_zoned, as_naive)
    return as_naive


Converter = Callable[[Column, pa.Array, np.ndarray], pa.Array]
"""A typed column from its string values: null where a value is empty or not of the type
(Column.convert tells the two apart with the `present` mask)."""
_CONVERTERS: dict[str, Converter] = {
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "datetime": _datetime,
}
