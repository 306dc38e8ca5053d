"""A CollectJob's life through the real kubectl: run, suspend, resume, stop, terminate, delete."""

from __future__ import annotations

import yaml
from prometheus_client.parser import text_string_to_metric_families

from localcluster.paths import REPO_ROOT as ROOT

SAMPLE = ROOT / "deploy" / "samples" / "collectjob.yaml"
CHILD_KINDS = "deployments,replicasets,pods,configmaps,serviceaccounts,roles,rolebindings"
# Big enough that the worker is still busy when the test acts on it.
LONG_ROWS = 600_000  # many 1 MiB chunks (the CRD minimum), so a suspension lands mid-run
THROTTLE = {"bytesPerSecond": 2 << 20}
"""Two chunks a second: the worker coalesces commits and would otherwise finish these rows
in a few seconds, before the test could act on it mid-run."""


def test_sample_runs_its_worker_and_succeeds(operator, collectjob, wait_for):
    job = collectjob(rows=5000, base=yaml.safe_load(SAMPLE.read_text()))
    assert job.get()["spec"]["sink"]["format"] == "jsonl", "the sample's own settings are used"

    wait_for(lambda: "Started" in job.events(), timeout=60, message="the worker pod to run")
    wait_for(lambda: job.phase() == "Succeeded", timeout=120, message="phase Succeeded")
    status = job.status()
    assert status["rowsProcessed"] == 5000
    assert status["progress"] == "100.0%"
    assert status["completionTime"]
    assert job.replicas() == 0
    assert job.output_ids() == job.source_ids()
    assert (job.sink / "_SUCCESS").exists()


def test_printer_columns(operator, collectjob, wait_for):
    job = collectjob(rows=10)
    wait_for(lambda: job.phase() is not None, timeout=60, message="a phase")
    header = job.kubectl("get", "cjob").stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "PROGRESS", "ROWS", "SUSPEND", "AGE"]
    wide = job.kubectl("get", "cjob", "-o", "wide").stdout.splitlines()[0].split()
    assert wide == [*header, "MESSAGE", "CLIENT", "REQUEST", "THROTTLE"]
    by_category = job.kubectl("get", "collect").stdout
    assert "orders" in by_category
    assert "collectjob" not in job.kubectl("get", "all").stdout


def test_suspend_then_resume_continues_from_the_checkpoint(operator, collectjob, wait_for):
    job = collectjob(rows=LONG_ROWS, throttle=THROTTLE)
    wait_for(
        lambda: job.status().get("rowsProcessed", 0) > 0,
        timeout=90,
        message="the worker to commit a first chunk",
    )

    job.patch({"suspend": True})
    waited = job.kubectl("wait", "--for=condition=Suspended", f"cjob/{job.name}", "--timeout=60s")
    assert "condition met" in waited.stdout
    assert job.phase() == "Suspended"
    assert job.replicas() == 0
    assert job.pods() == []
    suspended = job.status()
    assert 0 < suspended["rowsProcessed"] < LONG_ROWS, "suspend came too late to prove a resume"
    chunks = job.checkpoint().chunk_index
    assert chunks > 0, "no chunk was committed before the suspension"
    committed = {p: p.stat().st_mtime_ns for p in job.parts()[:chunks]}
    # Events are posted after the status that they tell of, off the reconcile path.
    wait_for(lambda: "Suspended" in job.events(), timeout=30, message="event Suspended")

    job.patch({"suspend": False})
    wait_for(lambda: job.phase() == "Running", timeout=30, message="phase Running after resume")
    assert job.replicas() == 1
    wait_for(lambda: job.phase() == "Succeeded", timeout=300, message="phase Succeeded")
    wait_for(lambda: "Resumed" in job.events(), timeout=30, message="event Resumed")
    # Parts committed before the suspension were not written again: it went on from there.
    assert {p: p.stat().st_mtime_ns for p in committed} == committed
    assert job.output_ids() == job.source_ids()


def test_stop_is_graceful_final_and_keeps_the_outputs(operator, collectjob, wait_for):
    job = collectjob(rows=LONG_ROWS, throttle=THROTTLE)
    wait_for(
        lambda: job.status().get("rowsProcessed", 0) > 0,
        timeout=90,
        message="a first committed chunk",
    )
    job.patch({"shutdown": "Stop"})
    wait_for(lambda: job.phase() == "Stopped", timeout=60, message="phase Stopped")
    assert job.replicas() == 0
    assert job.pods() == []
    rows = job.status()["rowsProcessed"]
    assert rows > 0 and job.parts()
    assert not (job.sink / "_SUCCESS").exists()

    job.patch({"suspend": True})
    refused = job.patch({"shutdown": ""}, check=False)
    assert refused.returncode != 0 and "one-way" in refused.stderr
    job.patch({"suspend": False})
    status = job.status()
    assert status["phase"] == "Stopped"
    assert job.replicas() == 0
    complete = next(c for c in status["conditions"] if c["type"] == "Complete")
    assert complete["status"] == "False"


def test_terminate_deletes_pods_at_once_and_is_final(operator, collectjob, wait_for):
    job = collectjob(
        rows=LONG_ROWS, throttle=THROTTLE, worker={"terminationGracePeriodSeconds": 600}
    )
    wait_for(job.running_pod, timeout=90, message="a running worker pod")
    job.patch({"shutdown": "Terminate"})
    wait_for(lambda: job.phase() == "Terminated", timeout=30, message="phase Terminated")
    # A 600 s grace period was not waited for: the pods were deleted with grace 0.
    wait_for(lambda: job.pods() == [], timeout=30, message="the worker pods to be gone")
    assert job.replicas() == 0
    job.patch({"suspend": False})
    assert job.phase() == "Terminated"


def test_delete_removes_every_child_and_keeps_the_outputs(operator, collectjob, wait_for):
    job = collectjob(rows=LONG_ROWS, throttle=THROTTLE)
    wait_for(lambda: job.parts(), timeout=90, message="a first part file")
    assert job.kubectl(
        "get", CHILD_KINDS, "-l", f"collect.dev/job={job.name}", "-o", "name"
    ).stdout.strip()
    job.kubectl("delete", "cjob", job.name, "--wait=true", "--timeout=60s")

    def children() -> str:
        return job.kubectl(
            "get", CHILD_KINDS, "-l", f"collect.dev/job={job.name}", "-o", "name"
        ).stdout.strip()

    wait_for(lambda: children() == "", timeout=90, message="garbage collection of the children")
    assert job.parts(), "the sink's outputs must be kept"


def test_worker_service_account_touches_only_its_own_configmap(operator, collectjob, wait_for):
    job = collectjob(rows=10)
    wait_for(job.deployment, timeout=60, message="the worker Deployment")
    who = f"--as=system:serviceaccount:{job.namespace}:{job.name}-worker"

    def can(*args: str) -> str:
        return job.kubectl("auth", "can-i", *args, who, check=False).stdout.strip()

    for verb in ("get", "update", "patch"):
        assert can(verb, f"configmap/{job.name}-checkpoint") == "yes"
    assert can("delete", f"configmap/{job.name}-checkpoint") == "no"
    assert can("get", "configmap/kube-root-ca.crt") == "no"
    assert can("list", "configmaps") == "no"
    assert can("get", "secrets") == "no"
    assert can("patch", f"collectjob/{job.name}") == "no"
    assert can("create", "pods") == "no"


def test_operator_metrics_follow_the_job(operator, collectjob, wait_for):
    job = collectjob(rows=10)
    wait_for(lambda: job.phase() == "Succeeded", timeout=120, message="phase Succeeded")
    this_job = {"namespace": job.namespace, "collectjob": job.name}

    def samples() -> dict[tuple[str, frozenset], float]:
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(operator.metrics())
            for s in family.samples
        }

    def exported() -> bool:
        found = samples()
        return (
            found.get(("collectjob_job_rows_processed", frozenset(this_job.items()))) == 10
            and found.get(("collectjob_jobs", frozenset({("phase", "Succeeded")}))) == 1
            and found.get(
                ("collectjob_phase_transitions_total", frozenset({("phase", "Succeeded")}))
            )
            == 1
        )

    wait_for(exported, timeout=30, message="the job's metrics on /metrics")
    job.kubectl("delete", "cjob", job.name)
    wait_for(
        lambda: ("collectjob_job_rows_processed", frozenset(this_job.items())) not in samples(),
        timeout=30,
        message="the deleted job's series to go",
    )
