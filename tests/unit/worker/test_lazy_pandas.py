"""A job without processors never loads pandas: its import is most of the worker's start-up
(about 2 s of 3 here), and the worker restarts on every resume."""

from __future__ import annotations

import subprocess
import sys


def test_worker_cli_starts_without_pandas():
    probe = "import sys, collectjob_worker.cli; print('pandas' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "False", result.stderr
