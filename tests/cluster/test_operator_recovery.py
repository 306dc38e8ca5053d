"""Level-triggered convergence: whatever happened, the job goes back to what its spec says."""

from __future__ import annotations

import json

LONG_ROWS = 60000


def test_operator_killed_mid_suspend_converges_after_restart(operator, collectjob, wait_for):
    job = collectjob(rows=LONG_ROWS)
    wait_for(job.running_pod, timeout=90, message="a running worker pod")
    operator.kill()
    # The state a crash right after scaling down leaves behind: replicas 0, phase Suspending.
    job.patch({"suspend": True})
    job.kubectl("scale", f"deployment/{job.name}-worker", "--replicas=0")
    job.kubectl("patch", "cjob", job.name, "--subresource=status", "--type", "merge",
                "-p", json.dumps({"status": {"phase": "Suspending"}}))  # fmt: skip
    wait_for(lambda: job.pods() == [], timeout=60, message="the worker pod to exit")
    assert job.phase() == "Suspending", "nobody but the operator may report Suspended"

    operator.start()
    job.kubectl("wait", "--for=condition=Suspended", f"cjob/{job.name}", "--timeout=60s")
    assert job.phase() == "Suspended"
    assert "Suspended" in job.events()


def test_suspend_while_the_operator_is_down_is_applied_on_restart(operator, collectjob, wait_for):
    job = collectjob(rows=LONG_ROWS)
    wait_for(job.running_pod, timeout=90, message="a running worker pod")
    operator.kill()
    job.patch({"suspend": True})
    assert job.replicas() == 1
    operator.start()
    wait_for(lambda: job.phase() == "Suspended", timeout=60, message="phase Suspended")
    assert job.replicas() == 0 and job.pods() == []


def test_deployment_deleted_by_hand_is_recreated(operator, collectjob, wait_for):
    job = collectjob(rows=LONG_ROWS)
    first = wait_for(job.deployment, timeout=60, message="the worker Deployment")
    job.kubectl("delete", "deployment", f"{job.name}-worker", "--wait=true")

    def recreated():
        dep = job.deployment()
        return dep if dep and dep["metadata"]["uid"] != first["metadata"]["uid"] else None

    dep = wait_for(recreated, timeout=60, message="a new worker Deployment")
    (owner,) = dep["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("CollectJob", job.name)
    assert dep["spec"]["replicas"] == 1


def test_replicas_changed_by_hand_are_restored(operator, collectjob, wait_for):
    job = collectjob(rows=LONG_ROWS)
    wait_for(job.running_pod, timeout=90, message="a running worker pod")
    job.kubectl("scale", f"deployment/{job.name}-worker", "--replicas=3")
    wait_for(lambda: job.replicas() == 1, timeout=30, message="replicas back to 1")
    job.patch({"suspend": True})
    wait_for(lambda: job.phase() == "Suspended", timeout=60, message="phase Suspended")
    job.kubectl("scale", f"deployment/{job.name}-worker", "--replicas=1")
    wait_for(lambda: job.replicas() == 0, timeout=30, message="replicas back to 0")
    assert job.phase() == "Suspended"
