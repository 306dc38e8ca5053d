"""Pods in real containers: podman + runc from the project's image, on the local node.

As every pod of the suite, these run what a cluster runs: the image built by `make image`,
its user, a read-only root, dropped capabilities, mounted volumes, the projected
ServiceAccount token, a memory cgroup, and PID 1 signal handling.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from container_pods import SA_DIR, Json, Pods, python_pod
from localcluster.client import Cluster


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


TOOLS = """
import os, shutil
dirs = ("/usr/local/bin", "/usr/local/sbin", "/usr/bin", "/usr/sbin")
programs = sorted(name for d in dirs if os.path.isdir(d) for name in os.listdir(d))
print("PROGRAMS", " ".join(programs))
tools = ("sh", "bash", "dash", "apt-get", "dpkg", "ls", "su")
print("FOUND", " ".join(t for t in tools if shutil.which(t)))
"""


def test_the_image_holds_no_program_but_python3_and_tini(pods: Pods) -> None:
    pods.apply(python_pod("tools", TOOLS))
    pods.wait_phase("tools", "Succeeded")
    log = pods.log("tools")
    programs = re.search(r"^PROGRAMS (.*)$", log, re.M)
    assert programs and programs[1], log
    assert all(name.startswith("python3") or name == "tini" for name in programs[1].split()), log
    assert re.search(r"^FOUND\s*$", log, re.M), f"shell or tools left in the image: {log}"


IN_CLUSTER = f"""
import os
from kubernetes import client
from collectjob_api.credentials import api_client
print("KUBECONFIG" in os.environ, sorted(os.listdir("{SA_DIR}")), flush=True)
namespace = open("{SA_DIR}/namespace").read()
core = client.CoreV1Api(api_client())
names = [c.metadata.name for c in core.list_namespaced_config_map(namespace).items]
print("CONFIGMAPS", " ".join(sorted(names)), flush=True)
try:
    core.list_namespaced_secret(namespace)
except client.ApiException as e:
    print("SECRETS", e.status, flush=True)
"""


def test_a_pod_reaches_the_api_server_with_its_projected_token_only(
    cluster: Cluster, pods: Pods, namespace: str
) -> None:
    cluster.kubectl(
        "create", "role", "cm-reader", "--verb=list", "--resource=configmaps", "-n", namespace
    )
    cluster.kubectl(
        "create",
        "rolebinding",
        "cm-reader",
        "--role=cm-reader",
        f"--serviceaccount={namespace}:default",
        "-n",
        namespace,
    )
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
    cluster.kubectl(
        "delete", "pod", name, "-n", pods.namespace, "--wait=true", "--timeout=60s", timeout=90
    )
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


def test_a_command_missing_from_the_image_is_a_start_error_not_a_success(pods: Pods) -> None:
    manifest = python_pod("typo", "unused")
    manifest["spec"]["containers"][0]["command"] = ["collectjob-wroker", "run"]
    pods.apply(manifest)
    status = pods.wait_phase("typo", "Failed")
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (128, "StartError")
    assert 'exec: "collectjob-wroker": executable file not found' in terminated["message"]
