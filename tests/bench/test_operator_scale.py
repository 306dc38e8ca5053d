"""The operator at scale, side by side with Kubernetes' own Job controller on the same cluster.

N objects of each (CJ_SCALE_JOBS, default 1000) are created with `suspend: true` from 8
client threads; then, for each side in turn:
- created -> all report Suspended (ours: phase Suspended; Jobs: condition Suspended);
- resume under that load, patch -> worker pod created, p50/p99 over RESUMES objects resumed
  one after another;
- mass suspend of those RESUMES running objects, patch -> all Suspended (ours: checkpoint
  committed, worker gone; Jobs: pods deleted);
- operator RSS and CPU seconds (from /proc) with N jobs;
- delete all, until every object and every child of it is gone.
The peer's Jobs sleep in a container of the project's image; ours run the real worker over
a shared CSV, mounted from the test's data volume (storage_fixtures.py). Results are printed
and written to .bench/operator_scale.json.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client

from container_pods import IMAGE
from localcluster.paths import REPO_ROOT as ROOT
from operator_fixtures import write_csv
from storage_fixtures import DataVolume

JOBS = int(os.environ.get("CJ_SCALE_JOBS", "1000"))
RESUMES = 20
CLIENT_THREADS = 8
POLL = 0.01
GROUP, VERSION, PLURAL = "collect.dev", "v1alpha1", "collectjobs"
JOB_LABEL = "collect.dev/job"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def since(
    started: float, check: Callable[[], bool], timeout: float, what: str, interval: float = 0.5
) -> float:
    """Seconds from `started` (a perf_counter time) until `check` holds; fails the
    benchmark after `timeout`."""
    while not check():
        assert time.perf_counter() - started < timeout, f"timed out waiting for {what}"
        time.sleep(interval)
    return time.perf_counter() - started


def create_all(make: Callable[[int], Any]) -> None:
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(make, range(JOBS)))


def proc_usage(pid: int) -> tuple[float, float]:
    """(RSS in MB, user+system CPU seconds) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss_kb / 1024, (int(fields[11]) + int(fields[12])) / ticks


def bench_ours(
    cluster, namespace: str, operator, tmp_path: Path, data_volume: DataVolume
) -> dict[str, Any]:
    api = cluster.api_client()
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    source = write_csv(tmp_path / "shared.csv", 300_000)

    def body(i: int) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "CollectJob",
            "metadata": {"name": f"cj-{i:04d}", "namespace": namespace},
            "spec": {
                "source": {"url": f"file://{source}"},
                "sink": {"url": f"file://{tmp_path}/out-{i}", "format": "jsonl"},
                "chunkBytes": 65536,
                "suspend": True,
                "worker": data_volume.worker,
            },
        }

    def phases() -> list[str | None]:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        return [(j.get("status") or {}).get("phase") for j in items]

    def patch(name: str, suspend: bool) -> None:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"spec": {"suspend": suspend}}
        )

    def pods(name: str) -> list[Any]:
        return list(core.list_namespaced_pod(namespace, label_selector=f"{JOB_LABEL}={name}").items)

    started = time.perf_counter()
    create_all(
        lambda i: custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body(i))
    )
    suspended = since(started, lambda: phases().count("Suspended") == JOBS, 1800, "all Suspended")
    rss, _ = proc_usage(operator.pid)

    resumed = [f"cj-{i:04d}" for i in range(0, JOBS, max(1, JOBS // RESUMES))][:RESUMES]
    latencies = []
    for name in resumed:
        started = time.perf_counter()
        patch(name, False)
        latencies.append(since(started, lambda n=name: bool(pods(n)), 60, f"{name}'s pod", POLL))

    def running(name: str) -> bool:
        return any(p.status.phase == "Running" for p in pods(name))

    since(
        time.perf_counter(),
        lambda: all(running(n) for n in resumed),
        300,
        "every resumed worker running",
    )
    started = time.perf_counter()
    for name in resumed:
        patch(name, True)
    mass_suspend = since(
        started, lambda: phases().count("Suspended") == JOBS, 300, "all Suspended", 0.1
    )
    rss_after, cpu_after = proc_usage(operator.pid)

    started = time.perf_counter()
    custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)

    def children_left() -> int:
        kinds = (
            core.list_namespaced_config_map,
            core.list_namespaced_service_account,
            core.list_namespaced_pod,
            client.AppsV1Api(api).list_namespaced_deployment,
            client.RbacAuthorizationV1Api(api).list_namespaced_role,
            client.RbacAuthorizationV1Api(api).list_namespaced_role_binding,
        )
        return sum(len(list_(namespace, label_selector=JOB_LABEL).items) for list_ in kinds)

    deleted = since(
        started, lambda: not phases() and children_left() == 0, 1800, "everything deleted"
    )
    return {
        "created_to_all_suspended_s": suspended,
        "resume_to_pod_p50_s": percentile(latencies, 0.5),
        "resume_to_pod_p99_s": percentile(latencies, 0.99),
        "mass_suspend_s": mass_suspend,
        "delete_all_s": deleted,
        "operator_rss_mb": max(rss, rss_after),
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

    started = time.perf_counter()
    create_all(lambda i: batch.create_namespaced_job(namespace, body(i)))
    suspended = since(started, lambda: suspended_count() == JOBS, 1800, "all Jobs Suspended")

    resumed = [f"job-{i:04d}" for i in range(0, JOBS, max(1, JOBS // RESUMES))][:RESUMES]
    latencies = []
    for name in resumed:
        started = time.perf_counter()
        batch.patch_namespaced_job(name, namespace, {"spec": {"suspend": False}})
        latencies.append(since(started, lambda n=name: bool(pods(n)), 60, f"{name}'s pod", POLL))

    def running(name: str) -> bool:
        return any(p.status.phase == "Running" for p in pods(name))

    since(
        time.perf_counter(),
        lambda: all(running(n) for n in resumed),
        300,
        "every resumed Job's pod running",
    )
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


def test_operator_at_scale_against_the_job_controller(
    cluster, operator, namespace, make_namespace, tmp_path, data_volume
):
    ours = bench_ours(cluster, namespace, operator, tmp_path, data_volume)
    peer = bench_job_controller(cluster, make_namespace({}))
    ratios = {k: ours[k] / peer[k] for k in peer if peer[k]}
    report = {
        "jobs": JOBS,
        "resumes": RESUMES,
        "collectjob_operator": ours,
        "job_controller": peer,
        "ratio_ours_to_job_controller": ratios,
    }
    out = ROOT / ".bench" / "operator_scale.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    rows = [f"{'figure':32} {'Job controller':>15} {'collectjob':>12} {'ratio':>7}"]
    for key, value in ours.items():
        theirs = "" if key not in peer else f"{peer[key]:.3f}"
        ratio = "" if key not in ratios else f"{ratios[key]:.2f}"
        rows.append(f"{key:32} {theirs:>15} {value:12.3f} {ratio:>7}")
    print(f"\n{JOBS} objects, resume/suspend over {RESUMES}:\n" + "\n".join(rows))
