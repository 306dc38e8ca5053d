"""The CollectJob worker.

pyarrow's allocator is chosen here, before any module imports pyarrow: jemalloc gives back
promptly the tables the pipelined executor allocates on one thread and frees on another,
which keeps the peak RSS within a few chunks (see stages.py). An explicit
ARROW_DEFAULT_MEMORY_POOL in the environment wins.
"""

import os

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
