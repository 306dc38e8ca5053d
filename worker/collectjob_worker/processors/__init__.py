"""Processing steps that teams write in pandas, run chunk by chunk inside the worker's loop.

A processor is a callable `process(frame, context) -> frame`, registered as an entry point
in the group `collectjob.processors` of an installed distribution. A CollectJob names it in
`spec.process: {name, options}`; the name is looked up among installed entry points only, so
nothing from a spec is ever imported or evaluated, and `options` reach the processor as
plain JSON data.

Why this keeps suspend, resume and exactly-once for free: a processor runs on the rows of a
chunk before its part is written, and the part replaces any earlier attempt atomically. A
redone chunk therefore never duplicates rows, even when the processor is not deterministic.
Processor state (see state.py) is committed with each chunk, so a redone chunk sees exactly
the state its first attempt saw. Side effects outside the sink are the processor's own: a
processor that calls other services must be idempotent, keyed by `context.idempotency_key`.
"""

from collectjob_worker.processors.context import ChunkContext, ProcessorError
from collectjob_worker.processors.registry import (
    ENTRY_POINT_GROUP,
    Processor,
    installed_processors,
    load_processor,
)
from collectjob_worker.processors.runner import ProcessorRunner

__all__ = [
    "ENTRY_POINT_GROUP",
    "ChunkContext",
    "Processor",
    "ProcessorError",
    "ProcessorRunner",
    "installed_processors",
    "load_processor",
]
