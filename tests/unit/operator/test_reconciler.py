"""The reconcile loop against an in-memory API: what it writes, and when it does not."""

from __future__ import annotations

import asyncio
import threading
import time

from collectjob_operator.cache import WatchCache
from collectjob_operator.job import JobRef
from collectjob_operator.metrics import JobsCollector
from collectjob_operator.reconciler import RETRY_BACKOFF, STALE_RETRY, Priority, Reconciler

REF = JobRef("team-a", "orders")
UID = "0f4c5e2a-1111-2222-3333-444455556666"
OLD_OWNER = [{"uid": "deleted-job", "kind": "CollectJob", "name": "orders", "controller": True}]


def new_reconciler(kube, **kwargs) -> Reconciler:
    return Reconciler(
        kube, "collectjob:test", JobsCollector(), WatchCache(kube.indices()), **kwargs
    )


def reconcile(kube, reconciler: Reconciler | None = None) -> Reconciler:
    reconciler = reconciler or new_reconciler(kube)

    async def one_pass() -> None:
        await reconciler.process(REF)
        await reconciler.flush_events()

    asyncio.run(one_pass())
    return reconciler


async def settle(reconciler: Reconciler, timeout: float = 5) -> None:
    """Let the worker pool run until nothing is queued or running."""
    deadline = time.monotonic() + timeout
    while reconciler.busy:
        assert time.monotonic() < deadline, "the reconciler never became idle"
        await asyncio.sleep(0.01)


def test_first_reconcile_creates_every_child_and_a_pending_status(fake_kube):
    kube = fake_kube()
    reconcile(kube)
    kinds = {kind for kind, _, _ in kube.objects}
    assert kinds == {"ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Deployment"}
    assert kube.deployment()["spec"]["replicas"] == 1
    assert kube.status_patches[-1]["phase"] == "Pending"


def test_a_job_created_suspended_gets_children_only_when_it_first_runs(fake_kube):
    """Like a suspended Job, which has no pods: nothing to create, nothing for the garbage
    collector to delete."""
    kube = fake_kube(spec={"suspend": True})
    reconciler = reconcile(kube)
    assert kube.objects == {}
    assert kube.job["status"]["phase"] == "Suspended"
    kube.job["spec"]["suspend"] = False
    reconcile(kube, reconciler)
    kinds = {kind for kind, _, _ in kube.objects}
    assert kinds == {"ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Deployment"}
    assert kube.deployment()["spec"]["replicas"] == 1


def test_a_job_created_suspended_costs_one_status_write_and_no_other_call(fake_kube):
    """What 1,000 jobs created suspended cost: their own status, nothing else."""
    kube = fake_kube(spec={"suspend": True})
    reconcile(kube)
    assert kube.calls == [] and len(kube.status_patches) == 1


def test_a_pass_before_the_cache_has_streamed_the_last_status_write_decides_on_it(fake_kube):
    kube = fake_kube()
    reconciler = reconcile(kube)
    written = kube.job
    stale = {**written, "metadata": {**written["metadata"], "resourceVersion": "1"}}
    stale["status"] = {}
    kube.job = stale  # the watch has not streamed the write yet; the API has it
    events, patches = list(kube.events), len(kube.status_patches)
    reconcile(kube, reconciler)
    assert kube.events == events, "an event was posted again"
    assert len(kube.status_patches) == patches, "the status was written again"
    kube.job = written  # streamed: read from the cache again
    kube.job["spec"]["suspend"] = True
    reconcile(kube, reconciler)
    assert kube.job["status"]["phase"] == "Suspending"


def test_a_status_write_based_on_a_changed_job_is_refused_and_tried_again(fake_kube):
    kube = fake_kube()
    patch = kube.patch_job_status

    def changed_meanwhile(ref, status, resource_version):
        kube.job["metadata"]["resourceVersion"] = "edited"  # say, a label was edited
        kube.patch_job_status = patch
        return patch(ref, status, resource_version)

    kube.patch_job_status = changed_meanwhile
    reconciler = new_reconciler(kube)

    async def scenario() -> None:
        reconciler.start()
        await reconciler.process(REF)
        assert kube.status_patches == [] and kube.events == [], "written on a past state"
        deadline = time.monotonic() + STALE_RETRY + 5
        while not kube.status_patches:  # the look-again, STALE_RETRY later
            assert time.monotonic() < deadline, "the refused write was not tried again"
            await asyncio.sleep(0.01)
        await settle(reconciler)
        await reconciler.stop()

    asyncio.run(scenario())
    assert kube.job["status"]["phase"] == "Pending" and len(kube.status_patches) == 1


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


def test_a_replicaset_at_zero_completes_a_suspend_before_the_deployment_status_does(fake_kube):
    """Under a mass suspend the Deployment's last status write waits in its controller's
    queue for seconds; its ReplicaSet says the pod is gone one write earlier."""
    kube = fake_kube()
    reconciler = reconcile(kube)
    kube.add_pod("orders-worker-1")
    kube.job["spec"]["suspend"] = True
    reconcile(kube, reconciler)
    kube.deployment()["metadata"]["uid"] = "deployment-uid"
    kube.roll_out()  # has seen replicas: 0, still counts the pod
    kube.objects.pop(("Pod", "team-a", "orders-worker-1"))
    owner = {"kind": "Deployment", "uid": "deployment-uid", "controller": True}
    kube._store(
        {
            "kind": "ReplicaSet",
            "metadata": {
                "name": "orders-worker-5d8f",
                "namespace": "team-a",
                "labels": {"collect.dev/job": "orders"},
                "ownerReferences": [owner],
            },
            "spec": {"replicas": 0},
            "status": {"observedGeneration": 1, "replicas": 1},
        }
    )
    reconcile(kube, reconciler)
    assert kube.job["status"]["phase"] == "Suspending"
    kube.objects[("ReplicaSet", "team-a", "orders-worker-5d8f")]["status"]["replicas"] = 0
    reconcile(kube, reconciler)
    assert kube.deployment()["status"]["replicas"] == 1
    assert kube.job["status"]["phase"] == "Suspended"


def test_children_left_by_a_deleted_job_of_the_same_name_are_not_taken_over(fake_kube):
    kube = fake_kube()
    old_owner = OLD_OWNER
    kube._store(
        {
            "kind": "ConfigMap",
            "metadata": {
                "name": "orders-checkpoint",
                "namespace": "team-a",
                "ownerReferences": old_owner,
            },
            "data": {"checkpoint.json": '{"offset": 100, "done": true}'},
        }
    )
    reconcile(kube)
    assert kube.status_patches == []
    assert ("Deployment", "team-a", "orders-worker") not in kube.objects
    kube.objects.pop(("ConfigMap", "team-a", "orders-checkpoint"))  # garbage-collected
    kube._store(
        {
            "kind": "Deployment",
            "metadata": {
                "name": "orders-worker",
                "namespace": "team-a",
                "ownerReferences": old_owner,
            },
        }
    )
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
    kube = fake_kube()
    reconciler = reconcile(kube)
    kube.add_pod("orders-worker-1")
    kube.job["spec"]["shutdown"] = "Terminate"
    reconcile(kube, reconciler)
    assert ("delete", "orders-worker-1") in kube.calls
    assert kube.job["status"]["phase"] == "Terminated"
    assert kube.deployment()["spec"]["replicas"] == 0


def test_every_new_spec_generation_is_reconciled_and_a_repeat_is_not(fake_kube):
    """A spec that flips back (suspend true, then false) is a new generation each time, so
    it cannot be mistaken for "unchanged" the way a diff against the last handled spec can."""
    kube = fake_kube()
    reconciler = reconcile(kube)
    kube.add_pod("orders-worker-1")

    async def scenario() -> None:
        reconciler.start()

        async def on_change(version: tuple[str, int]) -> None:
            reconciler.trigger_on_change(REF, version)
            await settle(reconciler)

        await on_change(("uid-1", 1))
        calls = len(kube.calls)
        await on_change(("uid-1", 1))
        assert len(kube.calls) == calls, "the same generation was reconciled twice"
        kube.job["spec"]["suspend"] = True
        await on_change(("uid-1", 2))
        assert kube.deployment()["spec"]["replicas"] == 0
        kube.job["spec"]["suspend"] = False
        await on_change(("uid-1", 3))
        assert kube.deployment()["spec"]["replicas"] == 1
        await reconciler.stop()

    asyncio.run(scenario())


def test_an_object_holding_a_childs_name_is_never_adopted(fake_kube):
    kube = fake_kube()
    admins = {
        "kind": "ServiceAccount",
        "metadata": {"name": "orders-worker", "namespace": "team-a", "labels": {"team": "admins"}},
    }
    kube._store(admins)
    reconcile(kube)
    assert kube.job["status"]["phase"] == "Failed"
    failed = next(c for c in kube.job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "NameTaken"
    assert "ServiceAccount team-a/orders-worker already exists" in failed["message"]
    sa = kube.objects[("ServiceAccount", "team-a", "orders-worker")]
    assert (
        sa["metadata"]["labels"] == {"team": "admins"} and "ownerReferences" not in sa["metadata"]
    )
    assert ("Deployment", "team-a", "orders-worker") not in kube.objects, "no worker may run"
    assert ("apply", "ServiceAccount") not in kube.calls


def test_a_foreign_deployment_of_the_workers_name_is_left_alone(fake_kube):
    kube = fake_kube()
    theirs = {
        "kind": "Deployment",
        "metadata": {"name": "orders-worker", "namespace": "team-a"},
        "spec": {"replicas": 3},
    }
    kube._store(theirs)
    reconcile(kube)
    assert kube.job["status"]["phase"] == "Failed"
    assert "Deployment team-a/orders-worker" in kube.job["status"]["message"]
    assert kube.deployment()["spec"] == {"replicas": 3}
    assert ("apply", "Deployment") not in kube.calls


def test_a_role_deleted_or_edited_by_hand_is_repaired(fake_kube):
    kube = fake_kube()
    reconciler = reconcile(kube)
    role = kube.objects[("Role", "team-a", "orders-worker")]
    kube._store({**role, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})
    reconcile(kube, reconciler)
    assert kube.objects[("Role", "team-a", "orders-worker")]["rules"] == role["rules"]
    kube.objects.pop(("RoleBinding", "team-a", "orders-worker"))
    reconcile(kube, reconciler)
    assert ("RoleBinding", "team-a", "orders-worker") in kube.objects


def test_a_deleted_jobs_memory_is_dropped_but_not_its_successors(fake_kube):
    kube = fake_kube()
    reconciler = reconcile(kube)
    reconciler.trigger_on_change(REF, ("new-uid", 1))
    reconciler.forget(REF, UID)  # the old job's DELETED event arrives after the new one
    assert reconciler.tracked == 1, "the job created again must stay tracked"
    reconciler.forget(REF, "new-uid")
    assert reconciler.tracked == 0


class SlowKube:
    """Delegates to a FakeKube; every create blocks until released, and records how many
    run at once and how many passes began (job lookups)."""

    def __init__(self, kube) -> None:
        self._kube = kube
        self.release = threading.Event()
        self.active = self.most_active = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        return getattr(self._kube, name)

    @property
    def passes(self) -> int:
        return len(self._kube.job_reads)

    def create(self, manifest):
        with self._lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            self.release.wait(timeout=5)
            return self._kube.create(manifest)
        finally:
            with self._lock:
                self.active -= 1


def test_one_job_is_never_reconciled_twice_at_once_and_triggers_fold(fake_kube):
    slow = SlowKube(fake_kube())
    reconciler = Reconciler(
        slow, "collectjob:test", JobsCollector(), WatchCache(slow.indices()), workers=4
    )

    async def scenario() -> None:
        reconciler.start()
        reconciler.enqueue(REF)
        while slow.active == 0:
            await asyncio.sleep(0.01)
        for _ in range(10):  # arrive while the first pass is blocked in its API calls
            reconciler.enqueue(REF)
        await asyncio.sleep(0.1)
        slow.release.set()
        await settle(reconciler)
        await reconciler.stop()

    asyncio.run(scenario())
    assert slow.most_active == 4, "the first pass creates its four simple children at once"
    assert slow.passes == 2, "the triggers during the first pass fold into one more pass"


def test_a_hung_reconcile_is_cancelled_at_its_deadline_and_retried(fake_kube):
    slow = SlowKube(fake_kube())
    reconciler = Reconciler(
        slow, "collectjob:test", JobsCollector(), WatchCache(slow.indices()), deadline=0.2
    )

    async def scenario() -> float:
        started = time.monotonic()
        await reconciler.process(REF)
        took = time.monotonic() - started
        slow.release.set()
        reconciler.start()
        await asyncio.sleep(1.5)  # the first retry is due after 1 s of backoff
        await settle(reconciler)
        await reconciler.stop()
        return took

    took = asyncio.run(scenario())
    assert took < 1.0, f"the reconcile was not cut at its deadline ({took:.2f}s)"
    assert slow.passes >= 2, "the timed-out reconcile was not retried"
    assert slow._kube.job["status"]["phase"] == "Pending"


def test_failed_reconciles_are_retried_after_1_2_4_seconds_up_to_30():
    assert [RETRY_BACKOFF.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_loop_with_work_and_no_progress_reports_a_stall(fake_kube):
    reconciler = new_reconciler(fake_kube())
    assert reconciler.stalled_for() == 0.0
    reconciler.enqueue(REF)  # no workers started: nothing will ever finish
    time.sleep(0.05)
    assert reconciler.stalled_for() >= 0.05


def test_spec_changes_go_before_child_changes_before_routine_passes(fake_kube):
    kube = fake_kube()
    reconciler = new_reconciler(kube, workers=1)

    async def scenario() -> None:
        for name in ("progress-a", "progress-b"):
            reconciler.enqueue(JobRef("team-a", name))  # routine: a checkpoint moved on
        reconciler.enqueue(JobRef("team-a", "pod-gone"), Priority.CHILD)
        reconciler.trigger_on_change(JobRef("team-a", "suspended"), ("u", 2))
        reconciler.enqueue(JobRef("team-a", "progress-a"), Priority.CHILD)  # its pod changed
        reconciler.start()
        await settle(reconciler)
        await reconciler.stop()

    asyncio.run(scenario())
    assert kube.job_reads == ["suspended", "pod-gone", "progress-a", "progress-b"]
