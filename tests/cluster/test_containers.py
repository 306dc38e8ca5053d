"""Pods in real containers: podman + runc from the project's image, on the local node.

Every namespace here asks the node for the container runtime, so what runs is what a
cluster runs: the image built by `make image`, its user, a read-only root, dropped
capabilities, mounted volumes, the projected ServiceAccount token, a memory cgroup, and
PID 1 signal handling.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.client import Cluster

Json = dict[str, Any]
IMAGE = "collectjob:dev"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# Big enough that the worker is still busy when the test suspends it.
LONG_ROWS = 60000


@pytest.fixture
def namespace(make_namespace: Callable[..., str]) -> str:
    """A restricted namespace whose pods run in containers (the operator fixtures use it)."""
    return str(make_namespace(runtime="container"))


@pytest.fixture
def host_namespace(make_namespace: Callable[..., str]) -> str:
    """Containers that may mount host paths: hostPath needs the privileged standard."""
    return str(make_namespace({"pod-security.kubernetes.io/warn": "restricted"}, "container"))


def python_pod(name: str, script: str, restart: str = "Never", **spec: Any) -> Json:
    container = {
        "name": "main",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "command": ["python3", "-c", textwrap.dedent(script)],
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {}}, *spec.pop("volumes", [])],
            **spec,
        },
    }


class Pods:
    """Apply pods into one namespace and read their status and their log file."""

    def __init__(self, cluster: Cluster, namespace: str, wait_for: Callable[..., Any]) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.wait_for = wait_for

    def apply(self, manifest: Json) -> None:
        self.cluster.kubectl("apply", "-n", self.namespace, "-f", "-", input=json.dumps(manifest))

    def get(self, name: str) -> Json | None:
        result = self.cluster.kubectl(
            "get", "pod", name, "-n", self.namespace, "-o", "json", check=False
        )
        return json.loads(result.stdout) if result.returncode == 0 else None

    def status(self, name: str) -> Json:
        pod = self.get(name)
        assert pod is not None, f"pod {name} is gone"
        return dict(pod.get("status") or {})

    def wait_phase(self, name: str, phase: str, timeout: float = 90) -> Json:
        def reached() -> Json | None:
            status = self.status(name)
            return status if status.get("phase") == phase else None

        return dict(self.wait_for(reached, timeout=timeout, message=f"pod {name} {phase}"))

    def log(self, name: str) -> str:
        path = self.cluster.state_dir / "node" / "logs" / f"{self.namespace}_{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, name: str, text: str, timeout: float = 60) -> str:
        return str(
            self.wait_for(
                lambda: text in self.log(name) and self.log(name),
                timeout=timeout,
                message=f"{text!r} in the log of pod {name}",
            )
        )


@pytest.fixture
def pods(cluster: Cluster, namespace: str, wait_for: Callable[..., Any]) -> Pods:
    return Pods(cluster, namespace, wait_for)


def status_fields(log: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+):\s+(.*)$", log, re.M))


def test_processes_run_as_uid_10001_without_capabilities(pods: Pods) -> None:
    pods.apply(python_pod("whoami", "print(open('/proc/1/status').read(), flush=True)"))
    pods.wait_phase("whoami", "Succeeded")
    fields = status_fields(pods.log("whoami"))
    assert fields["Uid"].split() == ["10001"] * 4
    assert fields["Gid"].split() == ["10001"] * 4
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[cap], 16) == 0, f"{cap} is {fields[cap]}"
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2", "seccomp RuntimeDefault is a filter (mode 2)"


WRITES = """
import errno, os
for path in ("/probe", "/opt/venv/probe", "/etc/probe", "/var/tmp/probe", "/nonexistent/x"):
    try:
        open(path, "w").close()
        print("WROTE", path)
    except OSError as e:
        print("REFUSED", path, errno.errorcode[e.errno])
with open("/tmp/ok", "w") as f:
    f.write("ok")
print("TMP", open("/tmp/ok").read(), flush=True)
"""


def test_writes_outside_volumes_fail_with_erofs(pods: Pods) -> None:
    pods.apply(python_pod("writer", WRITES))
    pods.wait_phase("writer", "Succeeded")
    log = pods.log("writer")
    assert "WROTE" not in log
    for path in ("/probe", "/opt/venv/probe", "/etc/probe", "/var/tmp/probe"):
        assert f"REFUSED {path} EROFS" in log, log
    assert "TMP ok" in log, "the emptyDir volume at /tmp stays writable"


IN_CLUSTER = f"""
import os
from kubernetes import client
from collectjob_api.credentials import api_client
print("KUBECONFIG" in os.environ, sorted(os.listdir("{SA_DIR}")), flush=True)
namespace = open("{SA_DIR}/namespace").read()
names = [c.metadata.name for c in client.CoreV1Api(api_client()).list_namespaced_config_map(namespace).items]
print("CONFIGMAPS", " ".join(sorted(names)), flush=True)
try:
    client.CoreV1Api(api_client()).list_namespaced_secret(namespace)
except client.ApiException as e:
    print("SECRETS", e.status, flush=True)
"""


def test_a_pod_reaches_the_api_server_with_its_projected_token_only(
    cluster: Cluster, pods: Pods, namespace: str
) -> None:
    cluster.kubectl("create", "role", "cm-reader", "--verb=list", "--resource=configmaps",
                    "-n", namespace)  # fmt: skip
    cluster.kubectl("create", "rolebinding", "cm-reader", "--role=cm-reader",
                    f"--serviceaccount={namespace}:default", "-n", namespace)  # fmt: skip
    pods.apply(python_pod("client", IN_CLUSTER))
    pods.wait_phase("client", "Succeeded")
    log = pods.log("client")
    assert "False ['ca.crt', 'namespace', 'token']" in log, log
    assert "CONFIGMAPS kube-root-ca.crt" in log, log
    assert "SECRETS 403" in log, "the token is the pod's ServiceAccount's, nothing more"
    spec = pods.get("client")["spec"]  # type: ignore[index]
    env = {e["name"] for e in spec["containers"][0].get("env") or ()}
    assert "KUBECONFIG" not in env


IGNORES_SIGTERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(600)
"""

HONOURS_SIGTERM = """
import signal, sys, time
def stop(*_):
    print("SIGTERM received as pid 1", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(600)
"""


def _delete_and_time(cluster: Cluster, pods: Pods, name: str) -> float:
    began = time.monotonic()
    cluster.kubectl("delete", "pod", name, "-n", pods.namespace, "--wait=true",
                    "--timeout=60s", timeout=90)  # fmt: skip
    return time.monotonic() - began


def test_a_pod_ignoring_sigterm_is_killed_at_the_end_of_its_grace_period(
    cluster: Cluster, pods: Pods
) -> None:
    pods.apply(python_pod("stubborn", IGNORES_SIGTERM, terminationGracePeriodSeconds=3))
    pods.wait_phase("stubborn", "Running")
    pods.wait_log("stubborn", "ready")
    took = _delete_and_time(cluster, pods, "stubborn")
    assert took >= 3, f"deleted after {took:.1f}s, before the 3 s grace period was over"
    assert re.search(r"container k8s_main_stubborn_\S+ exited with code 137", pods.log("stubborn"))


def test_pid_1_honours_sigterm_within_the_grace_period(cluster: Cluster, pods: Pods) -> None:
    pods.apply(python_pod("polite", HONOURS_SIGTERM, terminationGracePeriodSeconds=30))
    pods.wait_phase("polite", "Running")
    pods.wait_log("polite", "ready")
    took = _delete_and_time(cluster, pods, "polite")
    log = pods.log("polite")
    assert "SIGTERM received as pid 1" in log
    assert re.search(r"container k8s_main_polite_\S+ exited with code 0", log), log
    assert took < 30, f"deletion took {took:.1f}s: SIGTERM was not handled"


HUNGRY = """
import time
print("allocating", flush=True)
chunks = []
while True:
    chunks.append(bytearray(8 << 20))
    time.sleep(0.01)
"""


def test_a_memory_limit_breach_is_oomkilled_and_counted_as_a_restart(pods: Pods) -> None:
    limits = {"resources": {"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}}}
    pods.apply(python_pod("hungry", HUNGRY, restart="Always", container=limits))

    def restarted_after_oom() -> Json | None:
        statuses = pods.status("hungry").get("containerStatuses") or []
        if not statuses or statuses[0]["restartCount"] < 1:
            return None
        last = (statuses[0].get("lastState") or {}).get("terminated")
        return statuses[0] if last else None

    status = pods.wait_for(restarted_after_oom, timeout=120, message="an OOM kill and a restart")
    last = status["lastState"]["terminated"]
    assert (last["reason"], last["exitCode"]) == ("OOMKilled", 137)
    assert status["restartCount"] >= 1


def test_an_image_missing_from_the_store_is_err_image_pull(pods: Pods) -> None:
    manifest = python_pod("absent", "print(1)")
    manifest["spec"]["containers"][0]["image"] = "registry.invalid/nothing:1"

    def waiting_reason() -> str | None:
        statuses = pods.status("absent").get("containerStatuses") or []
        waiting = (statuses[0]["state"].get("waiting") or {}) if statuses else {}
        return waiting.get("reason") if waiting.get("reason") in PULL_REASONS else None

    pods.apply(manifest)
    assert pods.wait_for(waiting_reason, timeout=60, message="ErrImagePull") in PULL_REASONS
    pods.wait_for(
        lambda: waiting_reason() == "ImagePullBackOff", timeout=60, message="ImagePullBackOff"
    )


PULL_REASONS = ("ErrImagePull", "ImagePullBackOff")


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """A host directory the container user (10001) may write, mounted at its own path."""
    tmp_path.chmod(0o777)
    yield tmp_path


def test_worker_in_a_container_suspends_and_resumes_with_exact_output(
    operator, collectjob, shared_dir: Path, pods: Pods, wait_for
) -> None:
    sink = shared_dir / "sink"
    sink.mkdir(mode=0o777)
    sink.chmod(0o777)
    volume = {"name": "data", "hostPath": {"path": str(shared_dir), "type": "Directory"}}
    worker = {
        "volumes": [volume],
        "volumeMounts": [{"name": "data", "mountPath": str(shared_dir)}],
    }
    job = collectjob(
        rows=LONG_ROWS, worker=worker, sink={"url": f"file://{sink}", "format": "jsonl"}
    )
    job.sink = sink
    pod = wait_for(job.running_pod, timeout=120, message="a running worker pod")
    assert pod["status"]["containerStatuses"][0]["containerID"].startswith("podman://")
    wait_for(lambda: job.status().get("rowsProcessed", 0) > 0, timeout=120,
             message="the worker to commit a first chunk")  # fmt: skip

    job.patch({"suspend": True})
    job.kubectl("wait", "--for=condition=Suspended", f"cjob/{job.name}", "--timeout=90s")
    assert 0 < job.status()["rowsProcessed"] < LONG_ROWS, "suspended too late to prove a resume"
    log = pods.log(pod["metadata"]["name"])
    assert re.search(r"container k8s_worker_\S+ exited with code 0\b", log), (
        "the worker, PID 1 in its container, ends on SIGTERM within its grace period:\n"
        + log[-3000:]
    )
    job.patch({"suspend": False})
    wait_for(lambda: job.phase() == "Succeeded", timeout=300, message="phase Succeeded")
    assert job.output_ids() == job.source_ids()
