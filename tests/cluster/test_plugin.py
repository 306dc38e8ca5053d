"""`kubectl collectjob` against the real local cluster, as a person runs it: a subprocess,
through kubectl's own plugin mechanism, with the local kubeconfig passed explicitly."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from collectjob_api.client import CollectJobClient
from collectjob_api.contract import LABEL_CLIENT, LABEL_REQUEST
from plugin_fixtures import PLUGIN, plugin

pytestmark = pytest.mark.cluster
BULK_JOBS = 20


def test_get_shows_progress_and_provenance_wide(cluster, namespace, operator, jobs, wait_for):
    jobs("small", rows=500)
    api = CollectJobClient.from_kubeconfig(str(cluster.kubeconfig))
    wait_for(
        lambda: api.get(namespace, "small").phase == "Succeeded",
        timeout=120,
        message="the job to succeed",
    )
    table = plugin(cluster, namespace, "get", "-o", "wide")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:7] == ["NAME", "PHASE", "PROGRESS", "ROWS", "RATE", "ETA", "AGE"]
    assert "CLIENT" in header and "REQUEST" in header
    assert row.startswith("small") and "Succeeded" in row and "100.0%" in row and "500" in row
    assert "pipeline-a" in row and "r-1" in row

    # The API server's own wide printer columns read the escaped label path.
    wide = cluster.kubectl("get", "cjob", "-n", namespace, "-o", "wide").stdout
    assert "pipeline-a" in wide.splitlines()[1] and "r-1" in wide.splitlines()[1]

    as_json = json.loads(plugin(cluster, namespace, "get", "small", "-o", "json").stdout)
    assert as_json["phase"] == "Succeeded" and as_json["rows_processed"] == 500
    assert as_json["labels"][LABEL_REQUEST] == "r-1"

    # The job's events carry its provenance labels, so one selector finds them.
    # (Posted after the status they tell of: waited for.)
    def request_events() -> list[dict] | None:
        selected = f"{LABEL_REQUEST}=r-1"
        items = cluster.kubectl_json("get", "events", "-n", namespace, "-l", selected)["items"]
        return items if {"Started", "Completed"} <= {e["reason"] for e in items} else None

    events = wait_for(request_events, timeout=30, message="events Started and Completed")
    assert all(e["metadata"]["labels"][LABEL_CLIENT] == "pipeline-a" for e in events)

    watched = plugin(cluster, namespace, "watch", "small")
    assert watched.returncode == 0 and "Succeeded" in watched.stdout


def test_kubectl_runs_the_plugin_from_path(cluster, namespace, crd):
    env = {**os.environ, "PATH": f"{PLUGIN.parent}:{os.environ['PATH']}"}
    argv = [
        str(cluster.kubectl_path),
        "collectjob",
        "get",
        "--kubeconfig",
        str(cluster.kubeconfig),
        "-n",
        namespace,
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert f"No CollectJobs found in namespace {namespace}" in result.stderr


def test_missing_job_and_bad_usage_have_kubectl_exit_codes(cluster, namespace, crd):
    missing = plugin(cluster, namespace, "describe", "nope")
    assert missing.returncode == 1
    assert "404" in missing.stderr and f"{namespace}/nope" in missing.stderr
    both = plugin(cluster, namespace, "suspend", "a", "-l", "x=y")
    assert both.returncode == 2 and "not several" in both.stderr
    neither = plugin(cluster, namespace, "stop")
    assert neither.returncode == 2 and "-l SELECTOR or --all" in neither.stderr


SLOW = {"bytesPerSecond": 1024}
NO_REQUESTS = {"resources": {}}
"""The default requests (250m CPU each) fit only 8 workers on this 2-core node; the bulk
test needs 21 running at once."""


def test_bulk_suspend_by_request_returns_after_all_are_suspended(
    cluster, namespace, operator, jobs, wait_for
):
    api = CollectJobClient.from_kubeconfig(str(cluster.kubeconfig))
    # Throttled so that every job is still running when the suspension lands.
    for i in range(BULK_JOBS):
        jobs(f"bulk-{i:02d}", rows=8000, request="r-bulk", throttle=SLOW, worker=NO_REQUESTS)
    jobs("other", rows=8000, request="r-other", throttle=SLOW, worker=NO_REQUESTS)
    wait_for(
        lambda: all(j.phase == "Running" for j in api.list(namespace)),
        timeout=600,
        interval=2,
        message=f"{BULK_JOBS + 1} jobs to run",
    )

    dry = plugin(cluster, namespace, "suspend", "-l", f"{LABEL_REQUEST}=r-bulk", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert dry.stdout.count("(server dry run)") == BULK_JOBS
    assert not any(j.suspend for j in api.list(namespace))

    started = time.monotonic()
    bulk = plugin(
        cluster,
        namespace,
        "suspend",
        "-l",
        f"{LABEL_REQUEST}=r-bulk",
        "--wait",
        "--timeout",
        "300",
        timeout=400,
    )
    seconds = time.monotonic() - started
    print(f"\nbulk suspend of {BULK_JOBS} running jobs with --wait: {seconds:.2f}s")
    assert bulk.returncode == 0, bulk.stdout + bulk.stderr
    assert f"{BULK_JOBS} suspended, 0 failed, {BULK_JOBS} selected" in bulk.stdout
    after = {j.name: j.phase for j in api.list(namespace)}
    assert all(after[f"bulk-{i:02d}"] == "Suspended" for i in range(BULK_JOBS)), after
    assert after["other"] == "Running"  # not selected, not touched

    resumed = plugin(cluster, namespace, "resume", "bulk-00", "bulk-01", "--wait")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "2 resumed, 0 failed, 2 selected" in resumed.stdout

    ended = plugin(cluster, namespace, "terminate", "--all", "--wait")
    assert ended.returncode == 0, ended.stdout + ended.stderr
    assert all(j.phase == "Terminated" for j in api.list(namespace))
    # watch exits non-zero on anything but Succeeded.
    assert plugin(cluster, namespace, "watch", "other").returncode == 1


def test_describe_and_logs(cluster, namespace, operator, jobs, wait_for):
    jobs("told", rows=4000, throttle={"bytesPerSecond": 4096})
    api = CollectJobClient.from_kubeconfig(str(cluster.kubeconfig))
    wait_for(
        lambda: (api.checkpoint(namespace, "told") or None) and api.worker_pods(namespace, "told"),
        timeout=120,
        message="a worker and a checkpoint",
    )
    described = plugin(cluster, namespace, "describe", "told")
    assert described.returncode == 0, described.stderr
    for text in (
        "Phase:",
        "Checkpoint:",
        "Offset:",
        "Throttle:      4KiB/s",
        "Events:",
        "Request:       r-1",
    ):
        assert text in described.stdout
    logs = plugin(cluster, namespace, "logs", "told")
    # The local node has no kubelet API: the plugin reads the node's log file and names it.
    assert logs.returncode == 0, logs.stderr
    assert "node/logs" in logs.stderr and logs.stdout
