"""The worker in a real container, driven by the operator: suspended and resumed.

The job's CSV and its sink are in the test's temp dir, which the worker's container mounts
from a PersistentVolumeClaim at its own path (storage_fixtures.py), in a namespace that
enforces the restricted standard; the worker runs as the operator builds it: uid 10001,
read-only root, no capabilities.
"""

from __future__ import annotations

import re

from container_pods import Pods

# About 1.7 MB: at THROTTLE the worker reads for about a minute, committing a 64 KiB chunk every
# two seconds (the throttle's smallest chunk, below the CRD's 1 MiB chunk minimum), so the test
# suspends it mid-run however fast the unthrottled worker has become.
LONG_ROWS = 60000
THROTTLE = 32 * 1024


def test_worker_in_a_container_suspends_and_resumes_with_exact_output(
    cluster, namespace: str, operator, collectjob, wait_for
) -> None:
    pods = Pods(cluster, namespace, wait_for)
    job = collectjob(rows=LONG_ROWS, throttle={"bytesPerSecond": THROTTLE})
    pod = wait_for(job.running_pod, timeout=120, message="a running worker pod")
    assert pod["status"]["containerStatuses"][0]["containerID"].startswith("podman://")
    wait_for(
        lambda: job.status().get("rowsProcessed", 0) > 0,
        timeout=120,
        message="the worker to commit a first chunk",
    )

    job.patch({"suspend": True})
    job.cluster.kubectl(
        *("wait", "--for=condition=Suspended", f"cjob/{job.name}", "--timeout=90s"),
        *("-n", job.namespace),
        timeout=100,  # longer than the wait itself, so kubectl reports, not the subprocess
    )
    assert 0 < job.status()["rowsProcessed"] < LONG_ROWS, "suspended too late to prove a resume"
    log = pods.log(pod["metadata"]["name"])
    assert re.search(r"container k8s_worker_\S+ exited with code 0\b", log), (
        "the worker, PID 1 in its container, ends on SIGTERM within its grace period:\n"
        + log[-3000:]
    )
    job.patch({"suspend": False})
    wait_for(lambda: job.phase() == "Succeeded", timeout=300, message="phase Succeeded")
    assert job.output_ids() == job.source_ids()
