"""Operator latency on the local cluster, p50/p99 over ROUNDS suspend/resume rounds.

- patch -> worker Deployment's replicas changed (target < 200 ms);
- patch -> phase Suspended, i.e. the worker gone and its checkpoint committed (target < 2 s).

Times are taken from just before the API patch, polling the API every few milliseconds.
Results are printed and written to .bench/operator_latency.json.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from kubernetes import client

from bench.percentiles import percentile
from localcluster.paths import REPO_ROOT as ROOT

ROUNDS = 20
REPLICAS_TARGET = 0.2
SUSPENDED_TARGET = 2.0
POLL_INTERVAL = 0.005


def test_suspend_latency(cluster, operator, collectjob, apps_api, wait_for):
    job = collectjob(name="bench", rows=1_000_000)
    custom = client.CustomObjectsApi(cluster.api_client())

    def held_at(check, timeout: float, what: str) -> float:
        """Poll `check` every 5 ms; the perf_counter time it was first seen to hold."""
        wait_for(check, timeout=timeout, message=what, interval=POLL_INTERVAL)
        return time.perf_counter()

    def patch_suspend(value: bool) -> float:
        started = time.perf_counter()
        custom.patch_namespaced_custom_object(
            "collect.dev",
            "v1alpha1",
            job.namespace,
            "collectjobs",
            job.name,
            {"spec": {"suspend": value}},
        )
        return started

    def replicas() -> int:
        dep = apps_api.read_namespaced_deployment(f"{job.name}-worker", job.namespace)
        return int(dep.spec.replicas)

    def phase() -> str | None:
        obj: Any = custom.get_namespaced_custom_object(
            "collect.dev", "v1alpha1", job.namespace, "collectjobs", job.name
        )
        return (obj.get("status") or {}).get("phase")

    to_replicas, to_suspended = [], []
    for _ in range(ROUNDS):
        wait_for(job.running_pod, timeout=120, message="a running worker pod")
        assert phase() == "Running", "the job ended before the benchmark did: use more rows"
        started = patch_suspend(True)
        to_replicas.append(held_at(lambda: replicas() == 0, 30, "replicas 0") - started)
        suspended = held_at(lambda: phase() == "Suspended", 60, "phase Suspended")
        to_suspended.append(suspended - started)
        patch_suspend(False)
        wait_for(lambda: replicas() == 1, timeout=30, message="replicas 1", interval=POLL_INTERVAL)

    report: dict[str, Any] = {
        "rounds": ROUNDS,
        "patch_to_replicas_s": {
            "p50": percentile(to_replicas, 0.5),
            "p99": percentile(to_replicas, 0.99),
            "mean": statistics.mean(to_replicas),
        },
        "patch_to_suspended_s": {
            "p50": percentile(to_suspended, 0.5),
            "p99": percentile(to_suspended, 0.99),
            "mean": statistics.mean(to_suspended),
        },
    }
    out = ROOT / ".bench" / "operator_latency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\noperator latency over {ROUNDS} rounds: {json.dumps(report, indent=2)}")
    assert report["patch_to_replicas_s"]["p50"] < REPLICAS_TARGET
    assert report["patch_to_suspended_s"]["p50"] < SUSPENDED_TARGET
