"""`make fuzz`: the differential fuzz test (test_fuzz_differential.py) in FUZZ_SHARDS processes
at once, each with its own hypothesis seed and its share of FUZZ_EXAMPLES (default 10,000), so
a long run uses every core and stops by itself: each shard is bounded by its examples and by
pytest-timeout (FUZZ_TIMEOUT seconds). Prints each shard's report, the seeds (FUZZ_SEED
repeats a run) and the examples that passed; exits non-zero if any shard failed.
"""

from __future__ import annotations

import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEST = Path(__file__).with_name("test_fuzz_differential.py")
PASSING = re.compile(r"(\d+) passing, (\d+) failing")


def main() -> int:
    total = int(os.environ.get("FUZZ_EXAMPLES", "10000"))
    shards = int(os.environ.get("FUZZ_SHARDS", str(os.cpu_count() or 1)))
    seed = int(os.environ.get("FUZZ_SEED") or random.randrange(1 << 31))
    timeout = int(os.environ.get("FUZZ_TIMEOUT", "3600"))
    each = math.ceil(total / shards)
    print(f"fuzz: {shards} shards x {each} examples, seeds {seed}..{seed + shards - 1}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as logs:
        runs = []
        for shard in range(shards):
            log = open(Path(logs) / f"shard-{shard}.log", "w+")  # noqa: SIM115 (closed below)
            command = [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-W",
                "ignore",
                "-p",
                "no:cacheprovider",
                f"--timeout={timeout}",
                f"--hypothesis-seed={seed + shard}",
                "--hypothesis-show-statistics",
                str(TEST),
            ]
            env = {**os.environ, "FUZZ_EXAMPLES": str(each)}
            runs.append((log, subprocess.Popen(command, stdout=log, stderr=log, env=env)))
        passed = failed = 0
        for shard, (log, run) in enumerate(runs):
            code = run.wait(timeout + 120)
            log.seek(0)
            report = log.read()
            log.close()
            print(f"--- shard {shard} (seed {seed + shard}), exit {code}\n{report}")
            phases = [(int(ok), int(bad)) for ok, bad in PASSING.findall(report)]
            passed += sum(ok for ok, _ in phases)
            failed += 1 if code or not phases or any(bad for _, bad in phases) else 0
    seconds = time.monotonic() - started
    print(f"fuzz: {passed} examples passed, {failed} shards failed, in {seconds:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
