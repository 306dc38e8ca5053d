"""Faults on the real local cluster: the operator SIGKILLed at random moments, kube-apiserver
and etcd restarted mid-run, children deleted or edited by hand, a bulk patch by label.

After each: every job reaches its correct phase, no child is left without its job, no job
ever had two live workers (watched for the whole test), and every finished output is
row-exact. Convergence times are printed (`-s`); they are not asserted here.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch

from localcluster.controlplane import ControlPlane

JOB_LABEL = "collect.dev/job"
FLEET_LABEL = "test.collect.dev/fleet"
CHILD_KINDS = ("configmaps", "serviceaccounts", "roles", "rolebindings", "deployments")
SHORT_ROWS = 2000
LONG_ROWS = 20000
MIN_KILLS = 20


class WorkerWatch:
    """Watches the namespace's worker pods for a whole test and records every moment at
    which one job had two live workers (phase Running, not terminating)."""

    def __init__(self, api: client.CoreV1Api, namespace: str) -> None:
        self._api, self._namespace = api, namespace
        self._pods: dict[str, tuple[str, bool]] = {}
        self.violations: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="worker-watch")

    def __enter__(self) -> WorkerWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        version = None
        while not self._stop.is_set():
            try:
                if version is None:
                    self._pods.clear()  # relisting: the stream replays every pod that exists
                options: dict[str, Any] = {"label_selector": JOB_LABEL, "timeout_seconds": 5,
                                           "_request_timeout": 15}  # fmt: skip
                if version is not None:
                    options["resource_version"] = version
                stream = watch.Watch().stream(
                    self._api.list_namespaced_pod, self._namespace, **options
                )
                for event in stream:
                    pod = event["object"]
                    version = pod.metadata.resource_version
                    self._observe(event["type"], pod)
                    if self._stop.is_set():
                        return
            except Exception:  # API server restarting, or 410 Gone: list again
                version = None
                self._stop.wait(0.2)

    def _observe(self, kind: str, pod: Any) -> None:
        name = pod.metadata.name
        if kind == "DELETED":
            self._pods.pop(name, None)
            return
        live = pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None
        job = pod.metadata.labels[JOB_LABEL]
        self._pods[name] = (job, live)
        both = sorted(n for n, (j, alive) in self._pods.items() if j == job and alive)
        if len(both) > 1:
            self.violations.append(f"job {job}: live workers {both} at once")


@pytest.fixture
def worker_watch(core_api, namespace) -> Iterator[WorkerWatch]:
    with WorkerWatch(core_api, namespace) as watcher:
        yield watcher
    assert watcher.violations == [], "a job had two live workers"


class Killer:
    """SIGKILLs the operator at random moments (0.3 to 2.5 s apart) and starts it again at
    once, in a thread, until stopped and at least `minimum` kills were done."""

    def __init__(self, operator, minimum: int, seed: int) -> None:
        self._operator, self._minimum = operator, minimum
        self._random = random.Random(seed)
        self.kills = 0
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="killer")

    def _run(self) -> None:
        try:
            while not (self._stop.is_set() and self.kills >= self._minimum):
                self._stop.wait(self._random.uniform(0.3, 2.5))
                self._operator.kill()
                self.kills += 1
                self._operator.start()
        except BaseException as e:  # pytest.fail in start() is a BaseException
            self._error = e

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=180)
        assert not self._thread.is_alive(), "the killer did not stop"
        if self._error is not None:
            raise self._error

    def __exit__(self, *_: object) -> None:
        self.stop()


def phases(cluster, namespace: str) -> dict[str, str | None]:
    items = cluster.kubectl_json("get", "cjob", "-n", namespace)["items"]
    return {j["metadata"]["name"]: (j.get("status") or {}).get("phase") for j in items}


def orphans(cluster, namespace: str) -> list[str]:
    """Children whose job is gone, or whose controller is not the live job of their label."""
    uids = {j["metadata"]["name"]: j["metadata"]["uid"]
            for j in cluster.kubectl_json("get", "cjob", "-n", namespace)["items"]}  # fmt: skip
    found = []
    for kind in (*CHILD_KINDS, "pods"):
        items = cluster.kubectl_json("get", kind, "-n", namespace, "-l", JOB_LABEL)["items"]
        for obj in items:
            meta = obj["metadata"]
            job = meta["labels"][JOB_LABEL]
            owner = next((o for o in meta.get("ownerReferences") or () if o.get("controller")),
                         {})  # fmt: skip
            if job not in uids or (kind != "pods" and owner.get("uid") != uids[job]):
                found.append(f"{kind}/{meta['name']} (job {job})")
    return found


def converge(cluster, namespace: str, expected: dict[str, str], wait_for,
             timeout: float = 240) -> float:  # fmt: skip
    """Wait until the jobs are exactly `expected` (name -> phase) and nothing is orphaned;
    the seconds it took."""
    started = time.monotonic()
    wait_for(lambda: phases(cluster, namespace) == expected, timeout=timeout,
             message=f"phases {expected}", interval=0.5)  # fmt: skip
    wait_for(lambda: orphans(cluster, namespace) == [], timeout=120,
             message="no orphaned children", interval=0.5)  # fmt: skip
    return time.monotonic() - started


def assert_settled(jobs: dict[str, Any], expected: dict[str, str]) -> None:
    """Succeeded outputs are row-exact; suspended jobs hold no worker and a checkpoint."""
    for name, phase in expected.items():
        job = jobs[name]
        if phase == "Succeeded":
            assert job.output_ids() == job.source_ids(), f"job {name}: output not row-exact"
        if phase == "Suspended":
            assert job.replicas() == 0 and job.pods() == [], f"job {name}: a worker is left"


def label_all(cluster, namespace: str, names: list[str], fleet: str) -> None:
    cluster.kubectl("label", "cjob", "-n", namespace, *names, f"{FLEET_LABEL}={fleet}",
                    "--overwrite")  # fmt: skip


def patch_fleet(cluster, namespace: str, fleet: str, spec: dict[str, Any]) -> None:
    """The user's tool for bulk operations: one kubectl patch by label selector."""
    cluster.kubectl("patch", "cjob", "-n", namespace, "-l", f"{FLEET_LABEL}={fleet}",
                    "--type", "merge", "-p", json.dumps({"spec": spec}))  # fmt: skip


def make_jobs(collectjob, prefix: str, count: int, rows: int,
              **spec: Any) -> dict[str, Any]:  # fmt: skip
    return {f"{prefix}{i}": collectjob(name=f"{prefix}{i}", rows=rows, **spec)
            for i in range(count)}  # fmt: skip


def test_operator_sigkilled_at_random_moments_during_mass_operations(
    cluster, operator, collectjob, namespace, worker_watch, wait_for
):
    seed = random.randrange(1 << 30)
    print(f"killer seed {seed}")
    with Killer(operator, MIN_KILLS, seed) as killer:
        # Mass create: every job suspended, then three long and three short ones resumed.
        jobs = make_jobs(collectjob, "long", 3, LONG_ROWS, suspend=True)
        jobs |= make_jobs(collectjob, "short", 3, SHORT_ROWS, suspend=True)
        jobs |= make_jobs(collectjob, "idle", 2, SHORT_ROWS, suspend=True)
        jobs |= make_jobs(collectjob, "gone", 2, SHORT_ROWS, suspend=True)
        label_all(cluster, namespace, [*jobs], "all")
        label_all(cluster, namespace, [n for n in jobs if n.startswith(("long", "short"))], "run")
        label_all(cluster, namespace, [n for n in jobs if n.startswith("long")], "long")
        patch_fleet(cluster, namespace, "run", {"suspend": False})
        wait_for(lambda: all(jobs[f"long{i}"].status().get("rowsProcessed", 0) > 0
                             for i in range(3)), timeout=180,
                 message="every long job's first committed chunk")  # fmt: skip
        # Mass suspend of the long jobs, and mass delete, while the operator keeps dying.
        patch_fleet(cluster, namespace, "long", {"suspend": True})
        cluster.kubectl("delete", "cjob", "-n", namespace, "gone0", "gone1", "--wait=false")
        killer.stop()
    assert killer.kills >= MIN_KILLS
    expected = {**{f"long{i}": "Suspended" for i in range(3)},
                **{f"short{i}": "Succeeded" for i in range(3)},
                **{f"idle{i}": "Suspended" for i in range(2)}}  # fmt: skip
    took = converge(cluster, namespace, expected, wait_for)
    print(f"{killer.kills} kills; converged {took:.1f}s after the last restart")
    assert_settled(jobs, expected)
    for i in range(3):
        assert jobs[f"long{i}"].checkpoint().rows_processed > 0

    # Mass resume after all that: every long job finishes exactly once.
    patch_fleet(cluster, namespace, "long", {"suspend": False})
    expected |= {f"long{i}": "Succeeded" for i in range(3)}
    converge(cluster, namespace, expected, wait_for)
    assert_settled(jobs, expected)


def test_apiserver_and_etcd_restarted_mid_run(cluster, operator, collectjob, namespace,
                                             worker_watch, wait_for):  # fmt: skip
    plane = ControlPlane()
    jobs = make_jobs(collectjob, "run", 2, LONG_ROWS)
    jobs |= make_jobs(collectjob, "held", 2, SHORT_ROWS, suspend=True)
    label_all(cluster, namespace, ["run0"], "pause")
    label_all(cluster, namespace, ["held0"], "wake")
    wait_for(lambda: all(j.status().get("rowsProcessed", 0) > 0 for n, j in jobs.items()
                         if n.startswith("run")), timeout=180,
             message="both running jobs' first committed chunk")  # fmt: skip

    started = time.monotonic()
    plane.restart_apiserver()
    patch_fleet(cluster, namespace, "pause", {"suspend": True})
    plane.restart_etcd()
    patch_fleet(cluster, namespace, "wake", {"suspend": False})
    expected = {"run0": "Suspended", "run1": "Succeeded", "held0": "Succeeded",
                "held1": "Suspended"}  # fmt: skip
    took = converge(cluster, namespace, expected, wait_for)
    print(f"restarts done in {time.monotonic() - started - took:.1f}s; converged {took:.1f}s later")
    assert_settled(jobs, expected)


def test_children_deleted_or_edited_by_hand_are_repaired_within_seconds(
    cluster, operator, collectjob, namespace, wait_for
):
    job = collectjob(rows=SHORT_ROWS, suspend=True)
    wait_for(lambda: job.phase() == "Suspended", timeout=60, message="phase Suspended")
    name = f"{job.name}-worker"

    def get(kind: str, obj: str) -> dict[str, Any] | None:
        result = job.kubectl("get", kind, obj, "-o", "json", check=False)
        return dict(json.loads(result.stdout)) if result.returncode == 0 else None

    for kind, obj in (("role", name), ("rolebinding", name), ("serviceaccount", name),
                      ("configmap", f"{job.name}-checkpoint"), ("deployment", name)):  # fmt: skip
        before = get(kind, obj)
        assert before is not None
        job.kubectl("delete", kind, obj, "--wait=true")
        started = time.monotonic()
        wait_for(lambda k=kind, o=obj, b=before: (get(k, o) or b)["metadata"]["uid"]
                 != b["metadata"]["uid"], timeout=30,
                 message=f"{kind} {obj} recreated")  # fmt: skip
        print(f"{kind} recreated in {time.monotonic() - started:.2f}s")

    rules = get("role", name)["rules"]  # type: ignore[index]
    wide = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]
    job.kubectl("patch", "role", name, "--type", "merge", "-p", json.dumps({"rules": wide}))
    wait_for(lambda: get("role", name)["rules"] == rules, timeout=30,  # type: ignore[index]
             message="the Role's rules restored")  # fmt: skip
    job.patch({"suspend": False})
    wait_for(lambda: job.phase() == "Succeeded", timeout=120, message="phase Succeeded")
    assert job.output_ids() == job.source_ids()


@pytest.mark.parametrize("count", [10])
def test_bulk_patch_by_label_selector_suspends_every_running_job(
    cluster, operator, collectjob, namespace, worker_watch, wait_for, count
):
    jobs = make_jobs(collectjob, "bulk", count, 300_000)
    label_all(cluster, namespace, [*jobs], "bulk")
    wait_for(lambda: all(j.status().get("rowsProcessed", 0) > 0 for j in jobs.values()),
             timeout=240, message="every job's first committed chunk")  # fmt: skip

    started = time.monotonic()
    patch_fleet(cluster, namespace, "bulk", {"suspend": True})
    scaled = wait_for(lambda: all(j.replicas() == 0 for j in jobs.values()) and time.monotonic(),
                      timeout=60, message="every worker scaled to 0", interval=0.2)  # fmt: skip
    expected = {name: "Suspended" for name in jobs}
    took = converge(cluster, namespace, expected, wait_for, timeout=120)
    print(
        f"{count} jobs: patch -> all scaled to 0 {scaled - started:.1f}s, "
        f"-> all Suspended {time.monotonic() - started:.1f}s ({took:.1f}s after scale-down)"
    )
    assert_settled(jobs, expected)
    for name, job in jobs.items():
        status, checkpoint = job.status(), job.checkpoint()
        assert status["rowsProcessed"] == checkpoint.rows_processed > 0, name
