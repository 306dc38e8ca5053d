"""Level-triggered convergence: whatever happened, the job goes back to what its spec says."""

from __future__ import annotations

import json
from dataclasses import replace

from kubernetes import client

LONG_ROWS = 600_000  # many 1 MiB chunks (the CRD minimum), so a suspension lands mid-run
THROTTLE = {"bytesPerSecond": 2 << 20}
"""Two chunks a second: the worker coalesces commits and would otherwise finish these rows
in a few seconds, before the test could act on it mid-run."""
HOLD = "test.collect.dev/hold"


def test_operator_killed_mid_suspend_converges_after_restart(operator, collectjob, wait_for):
    job = collectjob(rows=LONG_ROWS, throttle=THROTTLE)
    wait_for(job.running_pod, timeout=90, message="a running worker pod")
    operator.kill()
    # The state a crash right after scaling down leaves behind: replicas 0, phase Suspending.
    job.patch({"suspend": True})
    job.kubectl("scale", f"deployment/{job.name}-worker", "--replicas=0")
    job.kubectl(
        "patch",
        "cjob",
        job.name,
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        json.dumps({"status": {"phase": "Suspending"}}),
    )
    wait_for(lambda: job.pods() == [], timeout=60, message="the worker pod to exit")
    assert job.phase() == "Suspending", "nobody but the operator may report Suspended"

    operator.start()
    job.kubectl("wait", "--for=condition=Suspended", f"cjob/{job.name}", "--timeout=60s")
    assert job.phase() == "Suspended"
    wait_for(lambda: "Suspended" in job.events(), timeout=30, message="event Suspended")


def test_suspend_while_the_operator_is_down_is_applied_on_restart(operator, collectjob, wait_for):
    job = collectjob(rows=LONG_ROWS, throttle=THROTTLE)
    wait_for(job.running_pod, timeout=90, message="a running worker pod")
    operator.kill()
    job.patch({"suspend": True})
    assert job.replicas() == 1
    operator.start()
    wait_for(lambda: job.phase() == "Suspended", timeout=60, message="phase Suspended")
    assert job.replicas() == 0 and job.pods() == []


def test_deployment_deleted_by_hand_is_recreated(operator, collectjob, wait_for):
    job = collectjob(rows=LONG_ROWS, throttle=THROTTLE)
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
    job = collectjob(rows=LONG_ROWS, throttle=THROTTLE)
    # Mid-run: the hand-made pods start while the worker works, and the suspension then
    # deletes a pod whose container has only just started (its SIGTERM must not be lost).
    wait_for(lambda: job.status().get("rowsProcessed", 0) > 0, timeout=90, message="rows processed")
    job.kubectl("scale", f"deployment/{job.name}-worker", "--replicas=3")
    wait_for(lambda: job.replicas() == 1, timeout=30, message="replicas back to 1")
    job.patch({"suspend": True})
    wait_for(lambda: job.phase() == "Suspended", timeout=60, message="phase Suspended")
    job.kubectl("scale", f"deployment/{job.name}-worker", "--replicas=1")
    wait_for(lambda: job.replicas() == 0, timeout=30, message="replicas back to 0")
    # A pod the hand-made scale-up started is waited for: Suspending until it is gone.
    wait_for(lambda: job.phase() == "Suspended", timeout=60, message="phase Suspended again")
    assert job.pods() == []


def test_a_job_created_again_under_a_deleted_jobs_name_starts_afresh(
    operator, collectjob, wait_for
):
    """The old job's checkpoint is never taken over, however slow the garbage collector."""
    old = collectjob(rows=LONG_ROWS, throttle=THROTTLE)
    wait_for(
        lambda: old.status().get("rowsProcessed", 0) > 0,
        timeout=90,
        message="the old job's first committed chunk",
    )
    checkpoint = f"configmap/{old.name}-checkpoint"
    # A finalizer holds the old checkpoint as a garbage collector that lags behind would.
    hold = json.dumps({"metadata": {"finalizers": [HOLD]}})
    release = json.dumps({"metadata": {"finalizers": None}})
    old.kubectl("patch", checkpoint, "--type", "merge", "-p", hold)
    try:
        body = old.get()
        old.kubectl("delete", "cjob", old.name, "--wait=true", "--timeout=60s")

        new_sink = old.sink.parent / "again"
        spec = {
            **body["spec"],
            "sink": {**body["spec"]["sink"], "url": f"file://{new_sink}"},
            "chunkBytes": 1 << 20,
        }
        again = {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "metadata": {"name": old.name, "namespace": old.namespace},
            "spec": spec,
        }
        old.cluster.kubectl("apply", "-f", "-", input=json.dumps(again))
        new = replace(old, sink=new_sink)
        old_uid, new_uid = body["metadata"]["uid"], new.get()["metadata"]["uid"]
        assert new_uid != old_uid

        def old_checkpoint() -> dict:
            return dict(json.loads(old.kubectl("get", checkpoint, "-o", "json").stdout)["metadata"])

        wait_for(
            lambda: (
                f"remove ConfigMap {old.namespace}/{old.name}-checkpoint left by a "
                f"previous CollectJob with uid {old_uid}" in operator.log()
            ),
            timeout=60,
            message="the operator to wait for the old checkpoint to go",
        )
        assert [o["uid"] for o in old_checkpoint()["ownerReferences"]] == [old_uid]
        wait_for(
            lambda: old_checkpoint().get("deletionTimestamp"),
            timeout=60,
            message="the garbage collector to delete the old checkpoint",
        )
    finally:
        old.kubectl("patch", checkpoint, "--type", "merge", "-p", release, check=False)

    wait_for(lambda: new.phase() == "Succeeded", timeout=180, message="phase Succeeded")
    assert new.status()["rowsProcessed"] == LONG_ROWS
    assert new.output_ids() == new.source_ids(), "the new job started at row 0"
    cm = json.loads(new.kubectl("get", checkpoint, "-o", "json").stdout)["metadata"]
    assert [o["uid"] for o in cm["ownerReferences"]] == [new_uid]


def test_suspend_and_resume_in_quick_succession_are_each_applied(
    cluster, operator, collectjob, wait_for
):
    """A resume that lands while an earlier reconcile still runs must not be lost: the spec
    then looks unchanged against what kopf handled last, but its generation is new. The API
    is used directly here: kubectl is too slow to land inside that window."""
    job = collectjob(rows=LONG_ROWS, throttle=THROTTLE)
    api = client.CustomObjectsApi(cluster.api_client())
    where = ("collect.dev", "v1alpha1", job.namespace, "collectjobs", job.name)

    def phase() -> str | None:
        return (api.get_namespaced_custom_object(*where).get("status") or {}).get("phase")

    for _ in range(5):
        wait_for(job.running_pod, timeout=90, message="a running worker pod")
        api.patch_namespaced_custom_object(*where, {"spec": {"suspend": True}})
        wait_for(lambda: phase() == "Suspended", timeout=60, message="Suspended", interval=0.005)
        api.patch_namespaced_custom_object(*where, {"spec": {"suspend": False}})
        wait_for(lambda: job.replicas() == 1, timeout=30, message="replicas 1 after the resume")
    wait_for(lambda: job.phase() == "Succeeded", timeout=300, message="phase Succeeded")
    assert job.output_ids() == job.source_ids()


def test_an_existing_object_with_a_childs_name_is_never_adopted(
    operator, collectjob, namespace, cluster, wait_for
):
    """An admin's ServiceAccount `etl-worker` must not become the worker's identity, nor be
    garbage-collected with the job."""
    cluster.kubectl("create", "serviceaccount", "etl-worker", "-n", namespace)
    before = cluster.kubectl_json("get", "serviceaccount", "etl-worker", "-n", namespace)
    job = collectjob(name="etl", rows=100)
    wait_for(lambda: job.phase() == "Failed", timeout=60, message="phase Failed")
    failed = next(c for c in job.status()["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "NameTaken"
    assert f"ServiceAccount {namespace}/etl-worker already exists" in failed["message"]
    assert job.deployment() is None and job.pods() == []

    job.kubectl("delete", "cjob", job.name, "--wait=true", "--timeout=60s")
    wait_for(
        lambda: job.kubectl("get", "role", "etl-worker", check=False).returncode != 0,
        timeout=60,
        message="the job's own Role garbage-collected",
    )
    after = cluster.kubectl_json("get", "serviceaccount", "etl-worker", "-n", namespace)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["metadata"].get("ownerReferences") is None
    assert after["metadata"].get("labels") == before["metadata"].get("labels")
