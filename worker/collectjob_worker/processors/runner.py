"""Running a job's processor on each block of rows, with the checks that keep its promise:
no row vanishes without a reject, the output has one schema, state is committed per chunk,
and a failure is retried and then reported with its type and a bounded message."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from collectjob_api.contract import ProcessConfig
from collectjob_worker.processors.context import ChunkContext, ProcessorError
from collectjob_worker.processors.registry import Processor, load_processor
from collectjob_worker.processors.state import (
    STATE_PREFIX,
    ProcessorState,
    state_name,
)
from collectjob_worker.sinks import SinkStore

MESSAGE_LIMIT = 512
"""Characters kept of a processor's exception message in the job's status."""
log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class JobRef:
    name: str
    namespace: str
    uid: str


Observer = Callable[[str, float, int, int], None]
"""(processor name, seconds, rows in, rows out) after each successful call."""


class ProcessorRunner:
    """One job's processor. `begin(chunk)` before a chunk's blocks, `apply` per block,
    `commit(chunk)` after its part is written and before the checkpoint commits it."""

    def __init__(
        self,
        spec: ProcessConfig,
        job: JobRef,
        attempts: int = 1,
        observe: Observer = lambda name, seconds, rows_in, rows_out: None,
        processor: Processor | None = None,
    ) -> None:
        self.spec = spec
        self.job = job
        self.attempts = max(1, attempts)
        self.observe = observe
        self.process = processor or load_processor(spec.name)
        self.schema: pa.Schema | None = None
        self._state = ProcessorState(limit=spec.state_limit_bytes)
        self._state_for: int | None = None
        """The chunk whose starting state `_state` holds."""

    def begin(self, chunk_index: int, sink: SinkStore) -> None:
        """Load the state the chunk started from, unless it is already in memory."""
        if self._state_for == chunk_index:
            return
        data = sink.get(state_name(chunk_index - 1)) if chunk_index > 0 else None
        limit = self.spec.state_limit_bytes
        self._state = (
            ProcessorState.from_bytes(data, limit) if data else ProcessorState(limit=limit)
        )
        self._state_for = chunk_index

    def apply(
        self, table: pa.Table, chunk_index: int, byte_range: tuple[int, int], first_line: int
    ) -> tuple[pa.Table, list[tuple[int, str]]]:
        """The processed rows, and (row of `table`, reason) for each row it rejected."""
        import pandas as pd  # here, not at the top: a job without processors never loads it

        frame = table.to_pandas(types_mapper=pd.ArrowDtype)
        failure: Exception | None = None
        for attempt in range(1, self.attempts + 1):
            state = self._state.copy()
            context = ChunkContext(
                job=self.job.name,
                namespace=self.job.namespace,
                job_uid=self.job.uid,
                chunk_index=chunk_index,
                byte_range=byte_range,
                first_line=first_line,
                options=self.spec.options,
                state=state,
                log=logging.getLogger(f"collectjob.processor.{self.spec.name}"),
            )
            started = time.monotonic()
            try:
                output = self.process(frame.copy(deep=False), context)
            except ProcessorError:
                raise
            except Exception as e:
                failure = e
                log.warning(
                    "processor %r failed on chunk %d (attempt %d of %d): %s",
                    self.spec.name,
                    chunk_index,
                    attempt,
                    self.attempts,
                    _describe(e),
                )
                continue
            result, rejects = self._check(frame, output, context, chunk_index)
            self._state = state
            self.observe(self.spec.name, time.monotonic() - started, len(frame), result.num_rows)
            return result, rejects
        assert failure is not None
        raise ProcessorError(
            f"processor {self.spec.name!r} failed on chunk {chunk_index} (source bytes "
            f"{byte_range[0]}-{byte_range[1]}, from line {first_line}) after {self.attempts} "
            f"attempt(s): {_describe(failure)}"
        ) from failure

    def commit(self, chunk_index: int, sink: SinkStore) -> None:
        """Write the state after this chunk, then drop what no redo can need any more."""
        sink.put(state_name(chunk_index), [self._state.to_bytes()])
        self._state_for = chunk_index + 1
        stale = [
            name
            for name in sink.list(STATE_PREFIX.rstrip("/"))
            if name.startswith(STATE_PREFIX) and name < state_name(chunk_index - 1)
        ]
        if stale:
            sink.delete(stale)

    def _check(
        self, given: pd.DataFrame, output: Any, context: ChunkContext, chunk_index: int
    ) -> tuple[pa.Table, list[tuple[int, str]]]:
        import pandas as pd  # loaded by apply() already

        where = f"processor {self.spec.name!r} on chunk {chunk_index}"
        if not isinstance(output, pd.DataFrame):
            raise ProcessorError(f"{where} returned {type(output).__name__}, not a DataFrame")
        if output.index.has_duplicates:
            raise ProcessorError(f"{where} returned rows with duplicate index labels")
        rejected = pd.Index(list(context.rejected))
        kept = output.index.difference(rejected, sort=False)
        foreign = kept.difference(given.index)
        if len(foreign):
            raise ProcessorError(
                f"{where} returned {len(foreign)} row(s) it was not given (index labels such "
                f"as {foreign[0]!r}); a processor may change and reject rows, not add them"
            )
        missing = given.index.difference(kept.union(rejected))
        if len(missing):
            raise ProcessorError(
                f"{where} dropped {len(missing)} row(s) without rejecting them; use "
                "context.reject(rows, reason) so every source row is accounted for"
            )
        output = output.loc[kept] if len(kept) != len(output) else output
        positions = given.index.get_indexer(rejected)
        rejects = sorted(
            (int(pos), context.rejected[label])
            for pos, label in zip(positions, rejected, strict=True)
            if pos >= 0
        )
        return self._to_table(output, where), rejects

    def _to_table(self, frame: pd.DataFrame, where: str) -> pa.Table:
        if not all(isinstance(c, str) for c in frame.columns) or frame.columns.has_duplicates:
            raise ProcessorError(f"{where} returned column names that are not unique strings")
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise ProcessorError(f"{where} returned values Arrow cannot store: {e}") from e
        if self.schema is None:
            self.schema = pa.schema(
                [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in table.schema]
            )
        if table.schema.names != self.schema.names:
            raise ProcessorError(
                f"{where} returned columns {table.schema.names}, but earlier chunks had "
                f"{self.schema.names}; every chunk must have the same columns"
            )
        try:
            return table.cast(self.schema)
        except (pa.ArrowException, ValueError) as e:
            raise ProcessorError(
                f"{where} returned types {table.schema.types} that do not match earlier "
                f"chunks' {self.schema.types}: {e}"
            ) from e


def kept_rows(total: int, rejected: list[tuple[int, str]]) -> np.ndarray:
    """Positions in a table of `total` rows that survive the given rejects."""
    keep = np.ones(total, bool)
    keep[[row for row, _ in rejected]] = False
    return np.flatnonzero(keep)


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"
