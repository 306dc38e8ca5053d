"""The CollectJob worker.

Two libraries are configured here, before any module imports them; an explicit setting in the
environment wins:
- pyarrow's allocator: jemalloc gives back promptly the tables the pipelined executor
  allocates on one thread and frees on another, which keeps the peak RSS within a few chunks
  (see stages.py);
- numpy's OpenBLAS threads: one. The worker does no linear algebra, yet at import OpenBLAS
  starts a thread per core the node has (a pod's CPU limit does not count), and each spins
  for about 0.12 s of CPU before it sleeps: on a 32-core node, 3.7 CPU-seconds of a worker's
  quota at every start, and 0.12 s on this 2-core machine (`import numpy` took 0.21-0.25 s
  of CPU, 0.08-0.13 s with one thread).
"""

import os

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
