"""Test workloads: `test-slow` takes `options.seconds` per block (a processor that calls a slow
service), `test-fail-on-chunk` raises on chunk `options.chunk` (a processor with a bug)."""

from __future__ import annotations

import time
from typing import Any


def slow(frame: Any, context: Any) -> Any:
    time.sleep(float(context.options.get("seconds", 1.0)))
    return frame


def fail_on_chunk(frame: Any, context: Any) -> Any:
    if context.chunk_index == int(context.options.get("chunk", 1)):
        raise RuntimeError(f"test processor failing on chunk {context.chunk_index} as asked")
    return frame
