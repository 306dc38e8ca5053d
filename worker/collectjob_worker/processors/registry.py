"""Finding a processor by name among installed entry points, never by importing a string
from the spec."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from collectjob_worker.processors.context import ProcessorError

if TYPE_CHECKING:
    import pandas as pd

    from collectjob_worker.processors.context import ChunkContext

ENTRY_POINT_GROUP = "collectjob.processors"
Processor = Callable[["pd.DataFrame", "ChunkContext"], "pd.DataFrame"]


def installed_processors() -> list[str]:
    """The names a CollectJob may use, sorted."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def load_processor(name: str) -> Processor:
    """The processor registered under `name`; an unknown name is a permanent error that lists
    the installed ones, since a typo must not pass rows through unprocessed."""
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        installed = ", ".join(installed_processors()) or "none"
        raise ProcessorError(
            f"processor {name!r} is not installed in the worker image "
            f"(entry point group {ENTRY_POINT_GROUP!r}); installed: {installed}"
        )
    if len({ep.value for ep in found}) > 1:
        raise ProcessorError(
            f"processor {name!r} is registered by several distributions "
            f"({', '.join(sorted(ep.value for ep in found))}); refusing to pick one"
        )
    processor = found[0].load()
    if not callable(processor):
        raise ProcessorError(f"processor {name!r} ({found[0].value}) is not callable")
    return processor
