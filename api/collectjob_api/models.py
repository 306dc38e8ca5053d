"""What every typed model shares: field types that say what they expect, and one error format.

The models are pydantic dataclasses: they construct by keyword or position, validate on every
construction (`dataclasses.replace` included) and stay plain dataclasses for `asdict`. A field
is one line, and its default is on that line and nowhere else. `parse` turns pydantic's errors
into one sentence per problem, naming the field by its path as the document spells it
(`transform.columns[0].maxLength must be a non-negative integer, got -1`), raised as the
caller's error class.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any, TypeVar

from pydantic import ConfigDict, PlainValidator, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic.dataclasses import dataclass
from pydantic_core import ArgsKwargs, PydanticCustomError

T = TypeVar("T")

CAMEL_CASE = ConfigDict(alias_generator=to_camel, populate_by_name=True)
"""Kubernetes-style keys (`chunkBytes`) in documents, snake_case in Python; both accepted."""


def refuse(template: str, **context: Any) -> PydanticCustomError:
    """An error for `parse` to report after the field's path: `refuse("is {got}", got=...)`."""
    return PydanticCustomError("refused", template, context)


def expecting(
    description: str, check: Callable[[Any], bool], convert: Callable[[Any], Any] | None = None
) -> PlainValidator:
    """Accept a value exactly when `check` says so (no coercion), else say what was expected."""

    def validate(value: Any) -> Any:
        if not check(value):
            raise refuse("must be {expected}, got {got}", expected=description, got=show(value))
        return convert(value) if convert else value

    return PlainValidator(validate)


def one_of(choices: Collection[str]) -> PlainValidator:
    def validate(value: Any) -> Any:
        if value not in choices:
            raise refuse(
                "is {got}, expected one of {choices}", got=show(value), choices=", ".join(choices)
            )
        return value

    return PlainValidator(validate)


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _is_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


Count = Annotated[int, expecting("a non-negative integer", _is_count)]
Flag = Annotated[bool, expecting("true or false", lambda v: type(v) is bool)]
Text = Annotated[str, expecting("a string", lambda v: isinstance(v, str))]
Name = Annotated[str, expecting("a non-empty string", lambda v: isinstance(v, str) and v != "")]
Strings = Annotated[list[str], expecting("a list of strings", _is_strings)]
StringTuple = Annotated[tuple[str, ...], expecting("a list of strings", _is_strings, tuple)]


def keys(model: type) -> set[str]:
    """The keys a document for `model` may have: its fields as the document spells them."""
    fields = model.__pydantic_fields__  # type: ignore[attr-defined]
    return {info.alias or name for name, info in fields.items()}


def known_keys_only(model: type, raw: Any) -> Any:
    if isinstance(raw, ArgsKwargs | model):
        return raw
    if not isinstance(raw, Mapping):
        raise refuse("must be an object, got {got}", got=type(raw).__name__)
    unknown = sorted(set(raw) - keys(model))
    if unknown:
        raise refuse(
            "has unknown keys {unknown}; known: {known}",
            unknown=str(unknown),
            known=str(sorted(keys(model))),
        )
    return raw


@dataclass(frozen=True)
class Closed:
    """A model whose documents must be objects of its own keys only, so a typo never
    silently disables a check (the transform)."""

    @model_validator(mode="before")
    @classmethod
    def _known_keys_only(cls, raw: Any) -> Any:
        return known_keys_only(cls, raw)


@dataclass(frozen=True)
class Pruned:
    """A model of a Kubernetes object's part: unknown keys are ignored, as the API server
    prunes them, and a key set to null is a key left out, so the field takes its default."""

    @model_validator(mode="before")
    @classmethod
    def _nulls_dropped(cls, raw: Any) -> Any:
        if isinstance(raw, Mapping):
            return {k: v for k, v in raw.items() if v is not None}
        return raw


def parse(model: type[T], raw: Any, error: type[Exception], name: Callable[[str], str]) -> T:
    """Validate `raw` as `model`; on failure raise `error` naming each field with `name(path)`."""
    try:
        return model.__pydantic_validator__.validate_python(raw)  # type: ignore[attr-defined]
    except ValidationError as e:
        raise error(explain(e, name)) from None


def under(prefix: str) -> Callable[[str], str]:
    """Name fields by their path below `prefix`: `spec.source.url`, or `spec` itself."""
    return lambda path: f"{prefix}.{path}" if path else prefix


def explain(error: ValidationError, name: Callable[[str], str]) -> str:
    return "; ".join(_sentence(e, name) for e in error.errors(include_url=False))


def _sentence(error: Any, name: Callable[[str], str]) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    field = name(path.removeprefix("."))
    if error["type"] == "refused":
        return f"{field} {error['msg']}"
    if error["type"] == "missing":
        return f"{field} is required"
    # pydantic's own words, without the value: it could be a URL or a credential.
    return f"{field} is invalid: {error['msg'][:1].lower()}{error['msg'][1:]}"


def show(value: Any, limit: int = 80) -> str:
    """A value for an error message, shortened so a huge input cannot flood a log or status."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
