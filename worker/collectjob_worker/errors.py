"""The worker's error kinds, split by what the caller must do about them.

- PermanentError: retrying cannot help (unreadable source, header not matching the schema,
  source changed since the checkpoint). It is written into the checkpoint's `error` field so
  the operator can fail the job with the worker's own words.
- CheckpointConflict: another worker updated the checkpoint since we read it. This worker is
  fenced and must exit without committing anything else.
- SinkError: the sink cannot be written right now. Nothing was committed, so a rerun redoes
  the chunk; it is not recorded as permanent because a volume or bucket can come back.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base class for errors the worker reports with a clear message instead of a traceback."""


class PermanentError(WorkerError):
    """A failure that retrying will not fix."""


class SourceChanged(PermanentError):
    """The source's fingerprint differs from the one recorded in the checkpoint."""


class CheckpointConflict(WorkerError):
    """The checkpoint was updated by someone else: this worker is fenced."""


class SinkError(WorkerError):
    """Writing to the sink failed; the chunk was not committed and will be redone."""
