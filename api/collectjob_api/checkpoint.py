"""The checkpoint: where a job stands, small enough for one ConfigMap key.

The worker writes it after every committed chunk; the operator mirrors it into the
CollectJob's status. One parser, used by both sides.

Its size is bounded because every write stores the whole ConfigMap again in etcd: the header
(the only part that grows with the source) by MAX_HEADER_BYTES and MAX_COLUMNS, the error by
MAX_ERROR_CHARS, and the whole by MAX_CHECKPOINT_BYTES, checked by the worker before every
write (checkpoint_store). At a few commits a second, MAX_HEADER_BYTES keeps one hostile job's
etcd growth to a few MB a minute.
"""

from __future__ import annotations

import json
from dataclasses import asdict, field, replace
from typing import Any

from pydantic.dataclasses import dataclass

from collectjob_api.models import Count, Flag, Strings, Text, parse
from collectjob_api.redact import safe_message

CHECKPOINT_FORMAT_VERSION = 1
MAX_HEADER_BYTES = 32 * 1024
"""The header's column names as stored (JSON), at most; a wider header is a permanent error."""
MAX_COLUMNS = 4096
"""Columns in the header, at most; more is a permanent error."""
MAX_CHECKPOINT_BYTES = 1024 * 1024 - 64 * 1024
"""The serialized checkpoint, at most: a ConfigMap holds 1 MiB, less headroom for metadata.
With the header capped it stays far below; this is the last line before the API server."""
MAX_ERROR_CHARS = 1024


class CheckpointError(ValueError):
    """The stored checkpoint cannot be understood."""


@dataclass(frozen=True)
class Retrying:
    """A transient error the worker is retrying right now (within its retry budget)."""

    reason: Text
    """SourceUnavailable or SinkUnavailable: the operator's Progressing condition reason."""
    message: Text
    """The error, with URLs redacted."""
    since: Text


@dataclass(frozen=True)
class Checkpoint:
    """Types are strict: a checkpoint is only ever written by `to_json`, so anything else
    (a string offset, a negative count) means it was damaged and must not be trusted."""

    offset: Count = 0
    """Byte offset in the source of the next unprocessed record."""
    rows_processed: Count = 0
    rows_rejected: Count = 0
    chunk_index: Count = 0
    """Index of the next part file to write."""
    next_chunk_bytes: Count = 0
    """Size of the next chunk, fixed at commit time so that a redo cuts the same chunk."""
    bytes_total: Count = 0
    fingerprint: Text = ""
    header: Strings = field(default_factory=list)
    header_end: Count = 0
    """Byte offset where the first data record starts."""
    line: Count = 1
    """Source line number (1-based) at `offset`, for reject and error messages."""
    holder: Text = ""
    epoch: Count = 0
    done: Flag = False
    error: Text = ""
    """A permanent error in the worker's own words; the operator fails the job with it."""
    started_at: Text = ""
    updated_at: Text = ""
    retrying: Retrying | None = None
    """Set while a transient error is being retried; cleared by the next commit."""
    version: Count = CHECKPOINT_FORMAT_VERSION

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
        """Record a permanent error, its URLs redacted and shortened so the checkpoint stays
        small (the operator copies it into the job's status)."""
        return replace(self, error=safe_message(message, MAX_ERROR_CHARS))

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
        return parse(cls, raw, CheckpointError, lambda path: f"checkpoint field {path!r}")
