"""Entry point of the `collectjob-worker` console script and `python -m collectjob_worker`."""

from __future__ import annotations

import sys

from collectjob_worker.cli import main

if __name__ == "__main__":
    sys.exit(main())
