"""What the worker package sets for the libraries it loads, before they load: measured in a
fresh interpreter, as a worker process starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, os
import collectjob_worker
import numpy  # OpenBLAS starts its threads within the import
threads = len(os.listdir("/proc/self/task"))
import pyarrow
print(json.dumps({"threads": threads, "pool": pyarrow.default_memory_pool().backend_name}))
"""


def _probe(**env: str) -> dict[str, object]:
    settings = ("OPENBLAS_NUM_THREADS", "ARROW_DEFAULT_MEMORY_POOL")
    environ = {k: v for k, v in os.environ.items() if k not in settings}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=environ | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(result.stdout))


def test_numpy_starts_no_blas_threads_and_pyarrow_allocates_with_jemalloc() -> None:
    assert _probe() == {"threads": 1, "pool": "jemalloc"}


def test_an_explicit_environment_wins() -> None:
    probed = _probe(OPENBLAS_NUM_THREADS="2", ARROW_DEFAULT_MEMORY_POOL="system")
    assert probed["pool"] == "system"
    assert probed["threads"] == (2 if (os.cpu_count() or 1) > 1 else 1)
