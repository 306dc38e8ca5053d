"""Entry point of the `collectjob-worker` console script and `python -m collectjob_worker`.

The start-up stop handler is installed before the CLI (and pyarrow, the Kubernetes client)
is imported: see early_stop.py for why a worker running as PID 1 needs it, and why a stop
while starting exits at once.
"""

from __future__ import annotations

import sys

from collectjob_worker import early_stop

early_stop.install()

from collectjob_worker.cli import main  # noqa: E402  (after the latch, on purpose)

if __name__ == "__main__":
    sys.exit(main())
