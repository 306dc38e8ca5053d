"""The operator at scale, side by side with Kubernetes' own Job controller on the same cluster.

N objects of each (CJ_SCALE_JOBS, default 1000) are created with `suspend: true` from 8
client threads; then, for each side in turn (ours first, then the Job controller's, each
deleted before the other starts):
- created -> all report Suspended (ours: phase Suspended; Jobs: condition Suspended);
- resume under that load, patch -> worker pod created, p50/p99 over RESUMES objects resumed
  one after another; each resumed worker is let settle (ours: it took its checkpoint over;
  Jobs: its pod runs) before the next patch, so no resume waits for the previous one's
  start-up. Ours also reports patch -> worker Deployment created: the operator's own share;
  the rest is the Deployment and ReplicaSet controllers';
- mass suspend of those RESUMES running objects, patch -> all Suspended (ours: checkpoint
  committed, worker gone; Jobs: pods deleted);
- operator RSS and CPU seconds (from /proc) with N jobs;
- delete all, until every object and every child of it is gone.
The peer's Jobs sleep in a container of the project's image; ours run the real worker over a
shared CSV mounted from the test's data volume (storage_fixtures.py), throttled so that a
running worker is about as idle as the sleep (the load is the N objects, not the workers' CPU).
Results are printed and written to .bench/operator_scale.json.

`test_mass_suspend_of_running_jobs` is the bulk case on its own: MASS_JOBS (default 100)
running jobs suspended by one `kubectl patch` of the names a label selector picks, timed
from the `kubectl get -l` until every worker is scaled to 0 and until every job is
Suspended with its checkpoint committed; kubectl's own time (it patches one name after
another, at its client's default rate limit of 5 requests a second after a burst of 10: 18 s
for 100 names on an idle cluster) and the time from its last patch are reported too. The same
jobs are then resumed and suspended again by `kubectl collectjob suspend -l ... --wait`
(8 patches in flight), timed until it returns with every job Suspended. For both, a watch
also times each job on its own, from the moment its patch is seen to the moment it is seen
Suspended (p50, p99, max): what the operator and the worker take, apart from how long the
client takes to send the patches; and each step of that: the operator's (-> Deployment at 0),
the Deployment controller's (-> ReplicaSet at 0) and the rest (-> Suspended). The operator's
RSS, and its CPU seconds in each of the two suspends, are reported too. Written to
.bench/operator_mass_suspend.json.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from bench.percentiles import percentile
from collectjob_api.checkpoint import Checkpoint
from collectjob_api.contract import CHECKPOINT_KEY, MIN_CHUNK_BYTES
from container_pods import IMAGE
from localcluster.paths import REPO_ROOT as ROOT
from operator_fixtures import write_csv
from plugin_fixtures import plugin
from storage_fixtures import DataVolume

JOBS = int(os.environ.get("CJ_SCALE_JOBS", "1000"))
MASS_JOBS = int(os.environ.get("CJ_MASS_SUSPEND_JOBS", "100"))
RESUMES = 20
CLIENT_THREADS = 8
POLL = 0.01
GROUP, VERSION, PLURAL = "collect.dev", "v1alpha1", "collectjobs"
JOB_LABEL = "collect.dev/job"
FLEET_LABEL = "bench.collect.dev/fleet"
IDLE_WORKER = {
    "throttle": {"bytesPerSecond": 1024},
    "worker": {"resources": {}},
}
"""A running worker that reads 1 KiB/s (never done within the benchmark) and asks for no
CPU: the default requests (250m) fit only 8 workers on the 2-core local node."""


def since(
    started: float, check: Callable[[], bool], timeout: float, what: str, interval: float = 0.5
) -> float:
    """Seconds from `started` (a perf_counter time) until `check` holds; fails the
    benchmark after `timeout`."""
    while not check():
        assert time.perf_counter() - started < timeout, f"timed out waiting for {what}"
        time.sleep(interval)
    return time.perf_counter() - started


def create_all(count: int, make: Callable[[int], Any]) -> None:
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(make, range(count)))


def proc_usage(pid: int) -> tuple[float, float]:
    """(RSS in MB, user+system CPU seconds) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss_kb / 1024, (int(fields[11]) + int(fields[12])) / ticks


class Jobs:
    """CollectJobs of one namespace over one shared CSV, through the API."""

    def __init__(self, cluster, namespace: str, source: Path, data_volume: DataVolume) -> None:
        api = cluster.api_client()
        self.namespace, self.source, self.sinks = namespace, source, data_volume.path
        self.worker = data_volume.into(IDLE_WORKER["worker"])
        self.custom, self.core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        self.apps, self.rbac = client.AppsV1Api(api), client.RbacAuthorizationV1Api(api)

    def create(self, name: str, suspend: bool, labels: dict[str, str] | None = None) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "CollectJob",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels or {}},
            "spec": {
                "source": {"url": f"file://{self.source}"},
                "sink": {"url": f"file://{self.sinks}/{name}", "format": "jsonl"},
                "chunkBytes": MIN_CHUNK_BYTES,
                "suspend": suspend,
                "throttle": IDLE_WORKER["throttle"],
                "worker": self.worker,
            },
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def phases(self) -> list[str | None]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
        return [(j.get("status") or {}).get("phase") for j in items["items"]]

    def patch(self, name: str, suspend: bool) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": {"suspend": suspend}}
        )

    def pods(self, name: str) -> list[Any]:
        selector = f"{JOB_LABEL}={name}"
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def deployment_exists(self, name: str) -> bool:
        try:
            self.apps.read_namespaced_deployment(f"{name}-worker", self.namespace)
        except client.ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    def worker_settled(self, name: str, beyond: int | None = None) -> bool:
        """A worker pod runs and has taken the job's checkpoint over (its start-up is done).

        With `beyond`, it has also committed rows beyond that count: past its whole start-up.
        A worker spends about 2.5 CPU-seconds starting (imports, then its first chunk), so 100
        workers started at once keep both cores busy for minutes after they have taken their
        checkpoints over; a suspend then measures that, not the suspend."""
        running = [p.metadata.name for p in self.pods(name) if p.status.phase == "Running"]
        checkpoint = self.checkpoint(name) if running else None
        return (
            checkpoint is not None
            and checkpoint.holder in running
            and (beyond is None or checkpoint.rows_processed > beyond)
        )

    def checkpoint(self, name: str) -> Checkpoint | None:
        """The job's checkpoint; None until the operator has created its ConfigMap."""
        try:
            configmap = self.core.read_namespaced_config_map(f"{name}-checkpoint", self.namespace)
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise
        text = (configmap.data or {}).get(CHECKPOINT_KEY)
        return Checkpoint.from_json(text) if text else None

    def children_left(self) -> int:
        kinds = (
            self.core.list_namespaced_config_map,
            self.core.list_namespaced_service_account,
            self.core.list_namespaced_pod,
            self.apps.list_namespaced_deployment,
            self.rbac.list_namespaced_role,
            self.rbac.list_namespaced_role_binding,
        )
        return sum(len(list_(self.namespace, label_selector=JOB_LABEL).items) for list_ in kinds)


class SuspendTimes:
    """Watches the jobs a label selector picks, and notes for each when its `spec.suspend:
    true` was first seen, then when it was first seen Suspended after that. Start it before
    the patches, as a `with` block; it stops when the block ends (its watches time out every
    few seconds to look). A new watch replays every object as it stands: the first times stay.

    It also watches the jobs' worker Deployments and their ReplicaSets, and notes when each
    was first seen asking for 0 replicas: the steps of a suspend are then the operator's
    (patch -> Deployment at 0), the Deployment controller's (-> ReplicaSet at 0), and the
    rest (ReplicaSet controller, node, worker's last commit, the operator's status). Start it
    while the workers run, so that a 0 seen is this suspend's."""

    def __init__(self, jobs: Jobs, selector: str) -> None:
        self.jobs, self.selector = jobs, selector
        self.patched: dict[str, float] = {}
        self.suspended: dict[str, float] = {}
        self.deployment_at_0: dict[str, float] = {}
        self.replicaset_at_0: dict[str, float] = {}
        self._stop = threading.Event()
        self._watching = threading.Event()
        custom, apps, ns = jobs.custom, jobs.apps, jobs.namespace
        sources = [
            (
                functools.partial(custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL),
                selector,
                self._note,
            ),
            (
                functools.partial(apps.list_namespaced_deployment, ns),
                JOB_LABEL,
                functools.partial(self._note_zero, self.deployment_at_0),
            ),
            (
                functools.partial(apps.list_namespaced_replica_set, ns),
                JOB_LABEL,
                functools.partial(self._note_zero, self.replicaset_at_0),
            ),
        ]
        self._threads = [
            threading.Thread(target=self._run, args=source, daemon=True) for source in sources
        ]

    def __enter__(self) -> SuspendTimes:
        for thread in self._threads:
            thread.start()
        assert self._watching.wait(30), "the watch did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(
        self, list_: Callable[..., Any], selector: str, note: Callable[[Any, float], None]
    ) -> None:
        while not self._stop.is_set():
            stream = watch.Watch().stream(list_, label_selector=selector, timeout_seconds=3)
            for event in stream:  # the request is sent here: a stream is lazy
                note(event["object"], time.perf_counter())
                if self._stop.is_set():
                    return

    def _note(self, job: dict[str, Any], now: float) -> None:
        self._watching.set()  # at the first job's event: the jobs exist, so one comes
        name = job["metadata"]["name"]
        if job["spec"].get("suspend"):
            self.patched.setdefault(name, now)
        phase = (job.get("status") or {}).get("phase")
        if phase == "Suspended" and name in self.patched:
            self.suspended.setdefault(name, now)

    @staticmethod
    def _note_zero(seen: dict[str, float], child: Any, now: float) -> None:
        job = (child.metadata.labels or {}).get(JOB_LABEL)
        if job is not None and child.spec.replicas == 0:
            seen.setdefault(job, now)

    def latencies(self, names: list[str]) -> dict[str, Any]:
        """Each job's patch -> Suspended, p50, p99 and max (every job must have both), and
        the same for each step of it."""
        assert set(names) <= set(self.suspended), (
            f"not seen Suspended: {set(names) - set(self.suspended)}"
        )
        deployment, replicaset = self.deployment_at_0, self.replicaset_at_0
        assert set(names) <= set(deployment) & set(replicaset), "a worker not seen at 0"
        steps = {
            "total": (self.patched, self.suspended),
            "operator_patch_to_deployment_0": (self.patched, deployment),
            "deployment_controller_to_replicaset_0": (deployment, replicaset),
            "rest_to_suspended": (replicaset, self.suspended),
        }
        result: dict[str, Any] = {}
        for step, (begin, end) in steps.items():
            # Three watches: one may deliver a moment after the next step's; never below 0.
            each = [max(0.0, end[n] - begin[n]) for n in names]
            result[step] = {
                "p50": percentile(each, 0.5),
                "p99": percentile(each, 0.99),
                "max": max(each),
            }
        return result


def resume_latency(patch: Callable[[], None], seen: dict[str, Callable[[], bool]]) -> dict:
    """Patch, then poll every POLL seconds: the seconds until each of `seen` first held
    (polled in order; the last one ends the wait)."""
    started = time.perf_counter()
    patch()
    times: dict[str, float] = {}
    while len(times) < len(seen):
        for what, check in seen.items():
            if what not in times and check():
                times[what] = time.perf_counter() - started
        assert time.perf_counter() - started < 60, f"timed out waiting for {seen.keys() - times}"
        time.sleep(POLL)
    return times


def bench_ours(
    cluster, namespace: str, operator, tmp_path: Path, data_volume: DataVolume
) -> dict[str, Any]:
    jobs = Jobs(cluster, namespace, write_csv(tmp_path / "shared.csv", 300_000), data_volume)
    names = [f"cj-{i:04d}" for i in range(JOBS)]
    started = time.perf_counter()
    create_all(JOBS, lambda i: jobs.create(names[i], suspend=True))
    suspended = since(
        started, lambda: jobs.phases().count("Suspended") == JOBS, 1800, "all Suspended"
    )
    rss, cpu_converged = proc_usage(operator.pid)

    resumed = names[:: max(1, JOBS // RESUMES)][:RESUMES]
    to_pod, to_deployment = [], []
    for name in resumed:
        times = resume_latency(
            lambda n=name: jobs.patch(n, False),
            {
                "deployment": lambda n=name: jobs.deployment_exists(n),
                "pod": lambda n=name: bool(jobs.pods(n)),
            },
        )
        to_pod.append(times["pod"])
        to_deployment.append(times["deployment"])
        since(time.perf_counter(), lambda n=name: jobs.worker_settled(n), 120, f"{name} settled")

    started = time.perf_counter()
    for name in resumed:
        jobs.patch(name, True)
    mass_suspend = since(
        started, lambda: jobs.phases().count("Suspended") == JOBS, 300, "all Suspended", 0.1
    )
    rss_after, cpu_after = proc_usage(operator.pid)

    started = time.perf_counter()
    jobs.custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    deleted = since(
        started,
        lambda: not jobs.phases() and jobs.children_left() == 0,
        1800,
        "everything deleted",
    )
    return {
        "created_to_all_suspended_s": suspended,
        "resume_to_pod_p50_s": percentile(to_pod, 0.5),
        "resume_to_pod_p99_s": percentile(to_pod, 0.99),
        "resume_to_deployment_p50_s": percentile(to_deployment, 0.5),
        "resume_to_deployment_p99_s": percentile(to_deployment, 0.99),
        "mass_suspend_s": mass_suspend,
        "delete_all_s": deleted,
        "operator_rss_mb": max(rss, rss_after),
        "operator_cpu_converged_s": cpu_converged,
        "operator_cpu_s": cpu_after,
    }


def bench_job_controller(cluster, namespace: str) -> dict[str, Any]:
    api = cluster.api_client()
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    context = {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }

    def body(i: int) -> dict[str, Any]:
        container = {
            "name": "w",
            "image": IMAGE,
            "imagePullPolicy": "Never",
            "command": ["python3", "-c", "import time; time.sleep(600)"],
            "securityContext": context,
        }
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": f"job-{i:04d}", "namespace": namespace},
            "spec": {
                "suspend": True,
                "backoffLimit": 0,
                "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
            },
        }

    def suspended_count() -> int:
        items = batch.list_namespaced_job(namespace).items
        return sum(
            1
            for j in items
            if any(c.type == "Suspended" and c.status == "True" for c in j.status.conditions or ())
        )

    def pods(name: str) -> list[Any]:
        return list(core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items)

    def running(name: str) -> bool:
        return any(p.status.phase == "Running" for p in pods(name))

    started = time.perf_counter()
    create_all(JOBS, lambda i: batch.create_namespaced_job(namespace, body(i)))
    suspended = since(started, lambda: suspended_count() == JOBS, 1800, "all Jobs Suspended")

    resumed = [f"job-{i:04d}" for i in range(0, JOBS, max(1, JOBS // RESUMES))][:RESUMES]
    latencies = []
    for name in resumed:
        times = resume_latency(
            lambda n=name: batch.patch_namespaced_job(n, namespace, {"spec": {"suspend": False}}),
            {"pod": lambda n=name: bool(pods(n))},
        )
        latencies.append(times["pod"])
        since(time.perf_counter(), lambda n=name: running(n), 120, f"{name}'s pod running")

    started = time.perf_counter()
    for name in resumed:
        batch.patch_namespaced_job(name, namespace, {"spec": {"suspend": True}})

    def all_pods_gone() -> bool:
        return not core.list_namespaced_pod(namespace).items

    mass_suspend = since(
        started,
        lambda: suspended_count() == JOBS and all_pods_gone(),
        300,
        "all Jobs Suspended",
        0.1,
    )

    started = time.perf_counter()
    batch.delete_collection_namespaced_job(namespace, propagation_policy="Background")
    deleted = since(
        started,
        lambda: not batch.list_namespaced_job(namespace).items and all_pods_gone(),
        1800,
        "every Job deleted",
    )
    return {
        "created_to_all_suspended_s": suspended,
        "resume_to_pod_p50_s": percentile(latencies, 0.5),
        "resume_to_pod_p99_s": percentile(latencies, 0.99),
        "mass_suspend_s": mass_suspend,
        "delete_all_s": deleted,
    }


def report(name: str, data: dict[str, Any]) -> None:
    out = ROOT / ".bench" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(data, indent=2))


def test_operator_at_scale_against_the_job_controller(
    cluster, operator, namespace, make_namespace, tmp_path, data_volume
):
    ours = bench_ours(cluster, namespace, operator, tmp_path, data_volume)
    peer = bench_job_controller(cluster, make_namespace({}))
    ratios = {k: ours[k] / peer[k] for k in peer if peer[k]}
    report(
        "operator_scale",
        {
            "jobs": JOBS,
            "resumes": RESUMES,
            "collectjob_operator": ours,
            "job_controller": peer,
            "ratio_ours_to_job_controller": ratios,
        },
    )
    rows = [f"{'figure':32} {'Job controller':>15} {'collectjob':>12} {'ratio':>7}"]
    for key, value in ours.items():
        theirs = "" if key not in peer else f"{peer[key]:.3f}"
        ratio = "" if key not in ratios else f"{ratios[key]:.2f}"
        rows.append(f"{key:32} {theirs:>15} {value:12.3f} {ratio:>7}")
    print(f"\n{JOBS} objects, resume/suspend over {RESUMES}:\n" + "\n".join(rows))


@pytest.mark.timeout(2400)
def test_mass_suspend_of_running_jobs(cluster, operator, namespace, tmp_path, data_volume):
    jobs = Jobs(cluster, namespace, write_csv(tmp_path / "shared.csv", 300_000), data_volume)
    names = [f"run-{i:03d}" for i in range(MASS_JOBS)]
    create_all(MASS_JOBS, lambda i: jobs.create(names[i], False, {FLEET_LABEL: "mass"}))
    since(
        time.perf_counter(),
        lambda: all(jobs.worker_settled(n, beyond=0) for n in names),
        900,
        f"{MASS_JOBS} workers running",
        2,
    )
    rss, cpu_running = proc_usage(operator.pid)

    fleet = f"{FLEET_LABEL}=mass"
    with SuspendTimes(jobs, fleet) as by_kubectl:
        started = time.perf_counter()
        selected = cluster.kubectl(
            "get", "cjob", "-n", namespace, "-l", fleet, "-o", "name"
        ).stdout.split()
        assert len(selected) == MASS_JOBS
        patch = json.dumps({"spec": {"suspend": True}})
        # One command, as a person types it; kubectl patches the names one after another.
        cluster.kubectl(
            "patch", "-n", namespace, *selected, "--type", "merge", "-p", patch, timeout=900
        )
        kubectl_done = time.perf_counter() - started

        def all_scaled_down() -> bool:
            items = jobs.apps.list_namespaced_deployment(namespace, label_selector=JOB_LABEL).items
            return len(items) == MASS_JOBS and all(d.spec.replicas == 0 for d in items)

        scaled = since(started, all_scaled_down, 300, "every worker scaled to 0", 0.05)
        suspended = since(
            started,
            lambda: jobs.phases().count("Suspended") == MASS_JOBS,
            300,
            "all Suspended",
            0.1,
        )
        since(time.perf_counter(), lambda: len(by_kubectl.suspended) == MASS_JOBS, 30, "watch")
    _, cpu_suspended_by_kubectl = proc_usage(operator.pid)
    for name in names:  # Suspended means the worker committed its checkpoint and is gone
        assert not jobs.pods(name), name

    # The same 100, resumed, then suspended by the plugin: patches 8 at a time, then waits.
    held = {n: checkpoint.rows_processed for n in names if (checkpoint := jobs.checkpoint(n))}
    resume = json.dumps({"spec": {"suspend": False}})
    cluster.kubectl(
        "patch", "-n", namespace, *selected, "--type", "merge", "-p", resume, timeout=900
    )
    since(
        time.perf_counter(),
        lambda: all(jobs.worker_settled(n, beyond=held.get(n, 0)) for n in names),
        900,
        "resumed",
        2,
    )
    _, cpu_resumed = proc_usage(operator.pid)
    with SuspendTimes(jobs, fleet) as by_plugin_watch:
        started = time.perf_counter()
        by_plugin = plugin(
            cluster, namespace, "suspend", "-l", fleet, "--wait", "--timeout", "600", timeout=700
        )
        plugin_suspended = time.perf_counter() - started
        since(time.perf_counter(), lambda: len(by_plugin_watch.suspended) == MASS_JOBS, 30, "watch")
    _, cpu_suspended_by_plugin = proc_usage(operator.pid)
    assert by_plugin.returncode == 0, by_plugin.stdout + by_plugin.stderr
    assert jobs.phases().count("Suspended") == MASS_JOBS
    result = {
        "jobs": MASS_JOBS,
        "kubectl_get_and_patch_s": kubectl_done,
        "patch_to_all_scaled_to_0_s": scaled,
        "patch_to_all_suspended_s": suspended,
        "last_patch_to_all_suspended_s": suspended - kubectl_done,
        "plugin_suspend_wait_s": plugin_suspended,
        "kubectl_each_patch_to_suspended_s": by_kubectl.latencies(names),
        "plugin_each_patch_to_suspended_s": by_plugin_watch.latencies(names),
        "operator_rss_mb": rss,
        "operator_cpu_s_in_suspend_by_kubectl": cpu_suspended_by_kubectl - cpu_running,
        "operator_cpu_s_in_suspend_by_plugin": cpu_suspended_by_plugin - cpu_resumed,
    }
    report("operator_mass_suspend", result)
    print("\n" + json.dumps(result, indent=2))
