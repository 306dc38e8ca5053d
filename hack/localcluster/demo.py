"""`make demo`: the operator running as a pod from deploy/, the sample job on demo data, and
the web console with a one-time login link for a demo user.

The operator and the worker run in containers from the image `make image` built (the
console runs on the host, on loopback). The sample manifest is
deploy/samples/collectjob.yaml; its source and sink URLs are pointed at a CSV of collected
survey responses generated here, in `.demo/`, which the worker's container mounts at the
same path from a claim bound to a hostPath PersistentVolume of `.demo/`
(localcluster.storage: the operator's admission policy refuses hostPath volumes in worker
pods, and the demo namespace enforces the restricted standard). uid 10001 may write there.
It is throttled (spec.throttle.bytesPerSecond) so that it runs for about DEMO_SECONDS:
time enough to watch it, suspend it and resume it with the printed commands.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import sys
from pathlib import Path

import yaml

from collectjob_operator.manifests import WORKER_UID
from localcluster.client import Cluster
from localcluster.controlplane import ControlPlane, free_port, wait_until
from localcluster.paths import REPO_ROOT
from localcluster.storage import claim_manifests, grant_rwx, worker_mount

DEMO_DIR = REPO_ROOT / ".demo"
DEMO_NAMESPACE = "collectjob-demo"
DEMO_JOB = "responses"
DEMO_CLAIM = "demo-data"
DEMO_ROWS = 3_000_000
DEMO_SECONDS = 180
DEMO_USER = "demo-user"
CONSOLE = "collectjob-console"
CONSOLE_DIR = REPO_ROOT / "deploy" / "console"
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
        out.writerow(
            ["response_id", "respondent", "zip", "country", "score", "submitted_at", "comment"]
        )
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
    """The sample, on the demo data, throttled to last about DEMO_SECONDS, with provenance."""
    job = yaml.safe_load(SAMPLE.read_text())
    job["metadata"] = {
        "name": DEMO_JOB,
        "namespace": DEMO_NAMESPACE,
        "labels": {"collect.dev/client": "make-demo", "collect.dev/request": "demo-1"},
    }
    job["spec"]["source"]["url"] = source.as_uri()
    job["spec"]["sink"]["url"] = sink.as_uri()
    worker = job["spec"].setdefault("worker", {})
    for key, items in worker_mount(DEMO_CLAIM, data_dir).items():
        worker[key] = [*worker.get(key, []), *items]
    job["spec"]["throttle"] = {"bytesPerSecond": max(1024, source.stat().st_size // DEMO_SECONDS)}
    return dict(job)


def _phase(cluster: Cluster) -> str:
    result = cluster.kubectl(
        "get",
        "cjob",
        DEMO_JOB,
        "-n",
        DEMO_NAMESPACE,
        "-o",
        "jsonpath={.status.phase}",
        check=False,
    )
    return result.stdout.strip()


def run_demo(plane: ControlPlane) -> int:
    cluster = Cluster(paths=plane.paths, server=plane.server)
    print("\n>> installing the operator: kubectl apply -k deploy/")
    cluster.kubectl("apply", "-k", str(REPO_ROOT / "deploy"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/collectjobs.collect.dev")
    cluster.kubectl(
        "rollout",
        "status",
        "deployment/collectjob-operator",
        "-n",
        "collectjob-system",
        "--timeout=180s",
        timeout=200,
    )

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
    grant_rwx(DEMO_DIR, WORKER_UID)
    grant_rwx(DEMO_DIR / "out", WORKER_UID)
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": DEMO_NAMESPACE,
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
        },
    }
    claim = claim_manifests(DEMO_NAMESPACE, DEMO_CLAIM, DEMO_DIR)
    manifest = yaml.safe_dump_all([namespace, *claim, demo_job_manifest(source, sink)])
    print(f">> applying the sample CollectJob {DEMO_NAMESPACE}/{DEMO_JOB}")
    cluster.kubectl("apply", "-f", "-", input=manifest)

    wait_until(lambda: _phase(cluster) not in ("", "Pending"), 120, "the job to start")
    print(cluster.kubectl("get", "cjob", "-n", DEMO_NAMESPACE, "-o", "wide").stdout)

    console_url, link = start_console(plane, cluster)
    bin_dir = Path(sys.executable).parent
    k = f"{cluster.kubectl_path} --kubeconfig {cluster.kubeconfig} -n {DEMO_NAMESPACE}"
    p = f"{bin_dir / 'kubectl-collectjob'} --kubeconfig {cluster.kubeconfig} -n {DEMO_NAMESPACE}"
    rights = "; ".join(
        f"{', '.join(r['verbs'])} {', '.join(r['resources'])}" for r in _demo_role()["rules"]
    )
    print(
        f"The job runs for about {DEMO_SECONDS // 60} minutes (throttled). Watch it, suspend "
        "it and resume it with the kubectl plugin:\n"
        f"  alias kc='{p}'\n"
        f"  kc watch {DEMO_JOB}               # a live progress bar; exit code 0 on Succeeded\n"
        f"  kc suspend {DEMO_JOB} --wait      # returns once it is Suspended\n"
        f"  kc resume {DEMO_JOB} --wait\n"
        f"  kc get -o wide                     # also: stop, terminate, describe, logs\n"
        f"With {bin_dir} on PATH, `{cluster.kubectl_path} collectjob ...` runs the same plugin.\n"
        f"\nThe web console: {console_url}/\n"
        f"  one-time login link: {link}\n"
        f"  you are system:serviceaccount:{DEMO_NAMESPACE}:{DEMO_USER}, who may in "
        f"{DEMO_NAMESPACE} only: {rights}\n"
        f"\nWith plain kubectl: {k} get cjob -w; {k} delete cjob {DEMO_JOB}\n"
        f"Output parts land in {sink}; the worker's log is in "
        f"{cluster.state_dir}/node/logs/. `make cluster-down` stops everything."
    )
    return 0


def _demo_role() -> dict:
    docs = yaml.safe_load_all((CONSOLE_DIR / "roles.yaml").read_text())
    return next(d for d in docs if d["metadata"]["name"] == "collectjob-operator-user")


def start_console(plane: ControlPlane, cluster: Cluster) -> tuple[str, str]:
    """The console as a local process on loopback, with its own ServiceAccount (TokenReview
    only, deploy/console/rbac.yaml) and a one-time link for the demo user's token."""
    cluster.kubectl(
        "apply", "-f", str(CONSOLE_DIR / "rbac.yaml"), "-f", str(CONSOLE_DIR / "roles.yaml")
    )
    cluster.kubectl("create", "serviceaccount", DEMO_USER, "-n", DEMO_NAMESPACE, check=False)
    cluster.kubectl(
        "create",
        "rolebinding",
        DEMO_USER,
        "-n",
        DEMO_NAMESPACE,
        "--clusterrole=collectjob-operator-user",
        f"--serviceaccount={DEMO_NAMESPACE}:{DEMO_USER}",
        check=False,
    )
    DEMO_DIR.mkdir(exist_ok=True)
    user_token = _secret_file(
        DEMO_DIR / "demo-user.token", _token(cluster, DEMO_NAMESPACE, DEMO_USER)
    )
    local = json.loads(cluster.kubeconfig.read_text())
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": CONSOLE,
        "clusters": local["clusters"],
        "users": [
            {"name": CONSOLE, "user": {"token": _token(cluster, "collectjob-system", CONSOLE)}}
        ],
        "contexts": [
            {"name": CONSOLE, "context": {"cluster": local["clusters"][0]["name"], "user": CONSOLE}}
        ],
    }
    console_config = _secret_file(DEMO_DIR / "console-kubeconfig", json.dumps(kubeconfig))
    port = free_port()
    log = plane.paths.logs / f"{CONSOLE}.log"
    plane._stop(CONSOLE)
    log.unlink(missing_ok=True)
    plane._spawn(
        CONSOLE,
        [
            str(Path(sys.executable).parent / CONSOLE),
            "--kubeconfig",
            str(console_config),
            "--port",
            str(port),
            "--namespace",
            DEMO_NAMESPACE,
            "--template",
            str(SAMPLE),
            "--login-token-file",
            str(user_token),
        ],
    )
    wait_until(lambda: "one-time login link: " in log.read_text(), 30, "the console to start")
    link = log.read_text().split("one-time login link: ", 1)[1].split()[0]
    return f"http://127.0.0.1:{port}", link


def _token(cluster: Cluster, namespace: str, account: str) -> str:
    out = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=8h")
    return out.stdout.strip()


def _secret_file(path: Path, text: str) -> Path:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)
    return path
