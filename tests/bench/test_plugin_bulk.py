"""Bulk suspend through `kubectl collectjob suspend -l ... --wait`, as a person runs it:
one job and BULK_JOBS jobs selected by collect.dev/request, measured in one run while the
same BULK_JOBS + 1 throttled jobs run. The command returns only when every selected job is
Suspended (its worker committed its checkpoint and exited, the Deployment at 0).

Results are printed and written to .bench/plugin_bulk.json.
"""

from __future__ import annotations

import json
import time

import pytest

from collectjob_api.contract import LABEL_REQUEST
from localcluster.paths import REPO_ROOT as ROOT
from plugin_fixtures import plugin

BULK_JOBS = 20
IDLE_WORKER = {"resources": {}}
"""Workers that ask for no CPU: the default requests (250m) fit only 8 of them on the 2-core
local node, and the rest would stay Pending."""


@pytest.mark.timeout(1800)
def test_bulk_suspend_time(cluster, namespace, operator, jobs, jobs_api, wait_for, apps_api):
    for i in range(BULK_JOBS):
        jobs(
            f"bulk-{i:02d}",
            rows=8000,
            request="r-bulk",
            throttle={"bytesPerSecond": 1024},
            worker=IDLE_WORKER,
        )
    jobs(
        "single", rows=8000, request="r-one", throttle={"bytesPerSecond": 1024}, worker=IDLE_WORKER
    )
    wait_for(
        lambda: all(j.phase == "Running" for j in jobs_api.list(namespace)),
        timeout=600,
        interval=2,
        message=f"{BULK_JOBS + 1} jobs to run",
    )

    seconds = {}
    for request, count in (("r-one", 1), ("r-bulk", BULK_JOBS)):
        started = time.perf_counter()
        result = plugin(
            cluster,
            namespace,
            "suspend",
            "-l",
            f"{LABEL_REQUEST}={request}",
            "--wait",
            "--timeout",
            "600",
            timeout=700,
        )
        seconds[count] = time.perf_counter() - started
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{count} suspended, 0 failed, {count} selected" in result.stdout
    deployments = apps_api.list_namespaced_deployment(namespace).items
    assert all(d.spec.replicas == 0 for d in deployments)

    report = {
        "jobs_running": BULK_JOBS + 1,
        "suspend_1_job_seconds": round(seconds[1], 2),
        f"suspend_{BULK_JOBS}_jobs_seconds": round(seconds[BULK_JOBS], 2),
        "ratio": round(seconds[BULK_JOBS] / seconds[1], 2),
    }
    print("\n" + json.dumps(report, indent=2))
    out = ROOT / ".bench"
    out.mkdir(exist_ok=True)
    (out / "plugin_bulk.json").write_text(json.dumps(report, indent=2))
