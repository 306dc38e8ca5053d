"""What a processor sees besides its rows: where the chunk lies, the job's options, a logger,
its state, and a way to reject rows with a reason."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from collectjob_worker.errors import PermanentError

if TYPE_CHECKING:
    import pandas as pd

    from collectjob_worker.processors.state import ProcessorState

REASON_LIMIT = 200
"""Characters kept of a reject reason a processor gives: rejects are tenant-visible output."""


class ProcessorError(PermanentError):
    """The job's processor is unknown, misconfigured, or failed beyond its retries."""


@dataclass
class ChunkContext:
    """One chunk's context. `reject` is the only way to remove rows: every row a processor
    receives is either in the frame it returns or rejected, so no row vanishes silently."""

    job: str
    namespace: str
    job_uid: str
    chunk_index: int
    byte_range: tuple[int, int]
    """The chunk's source bytes, [start, end)."""
    first_line: int
    """The source line the chunk's first row starts on (1-based, as in rejects)."""
    options: Mapping[str, Any]
    state: ProcessorState
    log: logging.Logger
    rejected: dict[Any, str] = field(default_factory=dict)
    """Index label of each rejected row -> reason."""

    def __post_init__(self) -> None:
        self.options = MappingProxyType(dict(self.options))

    @property
    def idempotency_key(self) -> str:
        """Stable across redos of this chunk: the key for any side effect it causes."""
        start, end = self.byte_range
        return f"{self.job_uid}/{self.chunk_index}/{start}-{end}"

    def reject(self, rows: pd.DataFrame | pd.Index, reason: str) -> pd.Index:
        """Reject these rows (by their index labels in the frame the processor was given);
        they land in `rejects/` with their line numbers and this reason. Returns the labels,
        so `frame.drop(context.reject(bad, "..."))` reads naturally; rejected rows are
        dropped from the output whether or not the processor drops them itself."""
        labels = rows if not hasattr(rows, "index") else rows.index
        text = str(reason)[:REASON_LIMIT]
        for label in labels:
            self.rejected.setdefault(label, text)
        return labels
