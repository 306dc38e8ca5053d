"""The reconcile loop against an in-memory API: what it writes, and when it does not."""

from __future__ import annotations

import asyncio

from collectjob_operator.job import JobRef
from collectjob_operator.metrics import JobsCollector
from collectjob_operator.reconciler import Reconciler

REF = JobRef("team-a", "orders")


def reconcile(kube, reconciler: Reconciler | None = None) -> Reconciler:
    reconciler = reconciler or Reconciler(kube, "collectjob:test", JobsCollector())
    asyncio.run(reconciler.trigger(REF))
    return reconciler


def test_first_reconcile_creates_every_child_and_a_pending_status(fake_kube):
    kube = fake_kube()
    reconcile(kube)
    kinds = {kind for kind, _, _ in kube.objects}
    assert kinds == {"ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Deployment"}
    assert kube.deployment()["spec"]["replicas"] == 1
    assert kube.status_patches[-1]["phase"] == "Pending"


def test_converged_job_is_not_written_again(fake_kube):
    kube = fake_kube()
    reconciler = reconcile(kube)
    kube.add_pod("orders-worker-1")
    reconcile(kube, reconciler)
    calls, patches = list(kube.calls), len(kube.status_patches)
    reconcile(kube, reconciler)
    assert kube.calls == calls
    assert len(kube.status_patches) == patches


def test_suspend_scales_down_then_reports_suspended_once_the_pod_is_gone(fake_kube):
    kube = fake_kube()
    reconciler = reconcile(kube)
    kube.add_pod("orders-worker-1")
    reconcile(kube, reconciler)
    kube.job["spec"]["suspend"] = True
    reconcile(kube, reconciler)
    assert kube.deployment()["spec"]["replicas"] == 0
    assert kube.job["status"]["phase"] == "Suspending"
    kube.objects.pop(("Pod", "team-a", "orders-worker-1"))
    kube.roll_out()
    reconcile(kube, reconciler)
    assert kube.job["status"]["phase"] == "Suspended"
    assert kube.events[-2:] == ["Suspending", "Suspended"]


def test_suspend_before_the_first_pod_exists_waits_for_the_scale_down(fake_kube):
    """No pod listed yet may only mean the ReplicaSet has not created it yet."""
    kube = fake_kube()
    reconciler = reconcile(kube)
    kube.job["spec"]["suspend"] = True
    reconcile(kube, reconciler)
    assert kube.deployment()["spec"]["replicas"] == 0
    assert kube.job["status"]["phase"] == "Suspending"
    kube.add_pod("orders-worker-1")  # created from the old spec, before the scale-down
    kube.roll_out()
    reconcile(kube, reconciler)
    assert kube.job["status"]["phase"] == "Suspending"
    kube.objects.pop(("Pod", "team-a", "orders-worker-1"))
    kube.roll_out()
    reconcile(kube, reconciler)
    assert kube.job["status"]["phase"] == "Suspended"


def test_children_left_by_a_deleted_job_of_the_same_name_are_not_taken_over(fake_kube):
    kube = fake_kube()
    old_owner = [{"uid": "deleted-job", "controller": True}]
    kube._store({"kind": "ConfigMap", "metadata": {"name": "orders-checkpoint",
                 "namespace": "team-a", "ownerReferences": old_owner},
                 "data": {"checkpoint.json": '{"offset": 100, "done": true}'}})  # fmt: skip
    reconcile(kube)
    assert kube.status_patches == []
    assert ("Deployment", "team-a", "orders-worker") not in kube.objects
    kube.objects.pop(("ConfigMap", "team-a", "orders-checkpoint"))  # garbage-collected
    kube._store({"kind": "Deployment", "metadata": {"name": "orders-worker",
                 "namespace": "team-a", "ownerReferences": old_owner}})  # fmt: skip
    reconciler = reconcile(kube)
    assert kube.status_patches == []
    assert kube.deployment()["metadata"]["ownerReferences"] == old_owner
    kube.objects.pop(("Deployment", "team-a", "orders-worker"))
    reconcile(kube, reconciler)
    assert kube.job["status"]["phase"] == "Pending"
    assert kube.job["status"]["rowsProcessed"] == 0
    assert kube.deployment()["metadata"]["ownerReferences"][0]["uid"] != "deleted-job"


def test_deployment_deleted_or_edited_by_hand_is_restored(fake_kube):
    kube = fake_kube()
    reconciler = reconcile(kube)
    kube.objects.pop(("Deployment", "team-a", "orders-worker"))
    reconcile(kube, reconciler)
    assert kube.deployment()["spec"]["replicas"] == 1
    edited = kube.deployment()
    kube._store({**edited, "spec": {**edited["spec"], "replicas": 5}})
    reconcile(kube, reconciler)
    assert kube.deployment()["spec"]["replicas"] == 1


def test_terminate_deletes_pods_without_grace(fake_kube):
    kube = fake_kube(spec={"shutdown": "Terminate"})
    kube.add_pod("orders-worker-1")
    reconcile(kube)
    assert ("delete", "orders-worker-1") in kube.calls
    assert kube.job["status"]["phase"] == "Terminated"
    assert kube.deployment()["spec"]["replicas"] == 0


def test_every_new_spec_generation_is_reconciled_and_a_repeat_is_not(fake_kube):
    """A spec that flips back (suspend true, then false) is a new generation each time, so
    it cannot be mistaken for "unchanged" the way a diff against the last handled spec can."""
    kube = fake_kube()
    reconciler = reconcile(kube)
    kube.add_pod("orders-worker-1")
    asyncio.run(reconciler.trigger_on_change(REF, ("uid-1", 1)))
    calls = len(kube.calls)
    asyncio.run(reconciler.trigger_on_change(REF, ("uid-1", 1)))
    assert len(kube.calls) == calls, "the same generation was reconciled twice"
    kube.job["spec"]["suspend"] = True
    asyncio.run(reconciler.trigger_on_change(REF, ("uid-1", 2)))
    assert kube.deployment()["spec"]["replicas"] == 0
    kube.job["spec"]["suspend"] = False
    asyncio.run(reconciler.trigger_on_change(REF, ("uid-1", 3)))
    assert kube.deployment()["spec"]["replicas"] == 1
