"""`make demo`: the operator running as a pod from deploy/, and the sample job on demo data.

Both run in containers from the image `make image` built. The sample manifest is
deploy/samples/collectjob.yaml; its source and sink URLs are pointed at a CSV of collected
survey responses generated here, in `.demo/`, which the worker's container mounts at the
same path (a hostPath volume, so the demo namespace only warns about the restricted
standard instead of enforcing it; the worker still runs restricted: uid 10001, read-only
root, no capabilities). Its sink directory is writable by uid 10001.
"""

from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path

import yaml

from localcluster.client import Cluster
from localcluster.controlplane import ControlPlane, wait_until
from localcluster.paths import REPO_ROOT

DEMO_DIR = REPO_ROOT / ".demo"
DEMO_NAMESPACE = "collectjob-demo"
DEMO_JOB = "responses"
DEMO_ROWS = 3_000_000
SAMPLE = REPO_ROOT / "deploy" / "samples" / "collectjob.yaml"
COUNTRIES = ["DE", "FR", "NL", "US", "BR", "JP", "IN", "NA"]
COMMENTS = ["", "fine", 'said "great", twice', "slow, then ok", "line one\nline two", "NA", "  "]


def write_responses_csv(path: Path, rows: int, seed: int = 7) -> None:
    """Survey-like rows with the cases that break naive CSV handling: quotes, commas,
    embedded newlines, leading zeros and values that look like NA."""
    rng = random.Random(seed)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["response_id", "respondent", "zip", "country", "score", "submitted_at",
                      "comment"])  # fmt: skip
        for i in range(rows):
            out.writerow(
                (
                    i,
                    f"r{rng.randrange(10**9):09d}",
                    f"{rng.randrange(100000):05d}",
                    rng.choice(COUNTRIES),
                    rng.randrange(11),
                    f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
                    rng.choice(COMMENTS),
                )
            )
    tmp.rename(path)


def demo_job_manifest(source: Path, sink: Path, data_dir: Path = DEMO_DIR) -> dict:
    job = yaml.safe_load(SAMPLE.read_text())
    job["metadata"] = {"name": DEMO_JOB, "namespace": DEMO_NAMESPACE}
    job["spec"]["source"]["url"] = source.as_uri()
    job["spec"]["sink"]["url"] = sink.as_uri()
    worker = job["spec"].setdefault("worker", {})
    volume = {"name": "demo-data", "hostPath": {"path": str(data_dir), "type": "Directory"}}
    worker["volumes"] = [*worker.get("volumes", []), volume]
    mount = {"name": "demo-data", "mountPath": str(data_dir)}
    worker["volumeMounts"] = [*worker.get("volumeMounts", []), mount]
    return dict(job)


def _phase(cluster: Cluster) -> str:
    result = cluster.kubectl(
        "get", "cjob", DEMO_JOB, "-n", DEMO_NAMESPACE, "-o", "jsonpath={.status.phase}",
        check=False,
    )  # fmt: skip
    return result.stdout.strip()


def run_demo(plane: ControlPlane) -> int:
    cluster = Cluster(paths=plane.paths, server=plane.server)
    print("\n>> installing the operator: kubectl apply -k deploy/")
    cluster.kubectl("apply", "-k", str(REPO_ROOT / "deploy"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/collectjobs.collect.dev")
    cluster.kubectl(
        "rollout", "status", "deployment/collectjob-operator", "-n", "collectjob-system",
        "--timeout=180s", timeout=200,
    )  # fmt: skip

    source = DEMO_DIR / "responses.csv"
    if not source.exists():
        print(f">> generating {DEMO_ROWS:,} survey responses in {source}")
        DEMO_DIR.mkdir(exist_ok=True)
        write_responses_csv(source, DEMO_ROWS)
    sink = DEMO_DIR / "out" / DEMO_JOB
    exists = cluster.kubectl("get", "cjob", DEMO_JOB, "-n", DEMO_NAMESPACE, check=False)
    if exists.returncode != 0 and sink.exists():
        # a sink belongs to one job (its ownership marker): a new demo job needs a fresh one
        print(f">> removing {sink}, the output of an earlier demo job")
        shutil.rmtree(sink)
    # The worker (uid 10001 in its container) creates the sink directory here.
    (DEMO_DIR / "out").mkdir(exist_ok=True)
    (DEMO_DIR / "out").chmod(0o777)
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": DEMO_NAMESPACE,
            "labels": {"pod-security.kubernetes.io/warn": "restricted"},
        },
    }
    manifest = yaml.safe_dump_all([namespace, demo_job_manifest(source, sink)])
    print(f">> applying the sample CollectJob {DEMO_NAMESPACE}/{DEMO_JOB}")
    cluster.kubectl("apply", "-f", "-", input=manifest)

    wait_until(lambda: _phase(cluster) not in ("", "Pending"), 120, "the job to start")
    print(cluster.kubectl("get", "cjob", "-n", DEMO_NAMESPACE, "-o", "wide").stdout)

    k = f"{cluster.kubectl_path} --kubeconfig {cluster.kubeconfig} -n {DEMO_NAMESPACE}"
    patch = f"{k} patch cjob {DEMO_JOB} --type merge -p"
    print(
        "Watch, suspend, resume, stop and delete it:\n"
        f"  {k} get cjob -w\n"
        f'  {patch} \'{{"spec":{{"suspend":true}}}}\'\n'
        f"  {k} wait --for=condition=Suspended cjob/{DEMO_JOB}\n"
        f'  {patch} \'{{"spec":{{"suspend":false}}}}\'\n'
        f'  {patch} \'{{"spec":{{"shutdown":"Stop"}}}}\'\n'
        f"  {k} delete cjob {DEMO_JOB}\n"
        f"Output parts land in {sink}; the worker's log is in "
        f"{cluster.state_dir}/node/logs/. `make cluster-down` stops everything."
    )
    return 0
