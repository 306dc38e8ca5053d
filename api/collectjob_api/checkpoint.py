"""The checkpoint: where a job stands, small enough for one ConfigMap key (< 4 KiB).

The worker writes it after every committed chunk; the operator mirrors it into the
CollectJob's status. One parser, used by both sides.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

CHECKPOINT_FORMAT_VERSION = 1
MAX_CHECKPOINT_BYTES = 4096
"""A checkpoint stays this small so the operator can read it cheaply and often."""
MAX_ERROR_CHARS = 1024


class CheckpointError(ValueError):
    """The stored checkpoint cannot be understood."""


@dataclass(frozen=True)
class Checkpoint:
    offset: int = 0
    """Byte offset in the source of the next unprocessed record."""
    rows_processed: int = 0
    rows_rejected: int = 0
    chunk_index: int = 0
    """Index of the next part file to write."""
    next_chunk_bytes: int = 0
    """Size of the next chunk, fixed at commit time so that a redo cuts the same chunk."""
    bytes_total: int = 0
    fingerprint: str = ""
    header: list[str] = field(default_factory=list)
    header_end: int = 0
    """Byte offset where the first data record starts."""
    line: int = 1
    """Source line number (1-based) at `offset`, for reject and error messages."""
    holder: str = ""
    epoch: int = 0
    done: bool = False
    error: str = ""
    """A permanent error in the worker's own words; the operator fails the job with it."""
    started_at: str = ""
    updated_at: str = ""
    version: int = CHECKPOINT_FORMAT_VERSION

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            expected = _FIELD_TYPES[f.name]
            if expected is list:
                ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            elif expected is int:
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            else:
                ok = isinstance(value, expected)
            if not ok:
                raise CheckpointError(
                    f"checkpoint field {f.name!r} must be {_FIELD_NAMES[expected]}, got {value!r}"
                )

    @property
    def progress_ratio(self) -> float:
        if self.done:
            return 1.0
        if self.bytes_total <= 0:
            return 0.0
        return min(1.0, self.offset / self.bytes_total)

    def evolve(self, **changes: Any) -> Checkpoint:
        return replace(self, **changes)

    def with_error(self, message: str) -> Checkpoint:
        """Record a permanent error, shortened so the checkpoint stays small."""
        if len(message) > MAX_ERROR_CHARS:
            message = message[: MAX_ERROR_CHARS - 3] + "..."
        return replace(self, error=message)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"checkpoint is not valid JSON: {e}") from e
        if not isinstance(raw, dict):
            raise CheckpointError(f"checkpoint must be a JSON object, got {type(raw).__name__}")
        version = raw.get("version", CHECKPOINT_FORMAT_VERSION)
        if version != CHECKPOINT_FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint format version {version} is not supported "
                f"(this build reads version {CHECKPOINT_FORMAT_VERSION})"
            )
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in raw.items() if k in known})
        except TypeError as e:
            raise CheckpointError(f"checkpoint has unexpected content: {e}") from e


_FIELD_TYPES: dict[str, type] = {
    "header": list,
    "done": bool,
    "error": str,
    "fingerprint": str,
    "holder": str,
    "started_at": str,
    "updated_at": str,
}
_FIELD_TYPES.update({f.name: int for f in fields(Checkpoint) if f.name not in _FIELD_TYPES})
_FIELD_NAMES = {
    list: "a list of strings",
    int: "a non-negative integer",
    bool: "true or false",
    str: "a string",
}
