"""The local node really runs pods: env, identity, RBAC, restarts, exit codes and deletion.

Every pod here runs `python3 -c SCRIPT` in a container of the project's image, in a
namespace that enforces the restricted Pod Security Standard. Pods report what they saw by
patching a ConfigMap with the ServiceAccount token projected into their container, which
also proves the token works.
"""

from __future__ import annotations

import ipaddress
import json
import os
import textwrap
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from kubernetes import client

from container_pods import IMAGE, SA_DIR, container_state
from localcluster.client import Cluster
from localcluster.storage import grant_rwx

Json = dict[str, Any]

CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
FINALIZER = "collectjob.test/hold"

# Imported by the scripts that talk to the API: an in-cluster client (projected token, and
# the API server's address from KUBERNETES_SERVICE_HOST/PORT).
CLIENT = """
import json, os, signal, sys, time
from kubernetes import client, config
config.load_incluster_config()
api = client.CoreV1Api()
ns = os.environ["POD_NAMESPACE"]
def record(**data):
    api.patch_namespaced_config_map("results", ns, {"data": {k: str(v) for k, v in data.items()}})
"""
NAMESPACE_ENV = {
    "name": "POD_NAMESPACE",
    "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
}


def python_container(script: str, name: str = "main", **fields: Any) -> Json:
    return {
        "name": name,
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "command": ["python3", "-c", textwrap.dedent(script)],
        "securityContext": CONTAINER_SECURITY,
        **fields,
    }


# An emptyDir shared by a pod's containers and kept across their restarts.
STATE_VOLUME = {"name": "state", "emptyDir": {}}
STATE_MOUNT = {"name": "state", "mountPath": "/state"}


def reporting_container(script: str, **fields: Any) -> Json:
    """A python container whose script can call `record(key=value)` into ConfigMap results."""
    env = [NAMESPACE_ENV, *fields.pop("env", [])]
    return python_container(CLIENT + textwrap.dedent(script), env=env, **fields)


def config_map(name: str, data: dict[str, str]) -> Json:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def pod_manifest(name: str, *containers: Json, restart: str = "Never", **spec: Any) -> Json:
    metadata = {"name": name, "labels": {"app": name}}
    if "finalizers" in spec:
        metadata["finalizers"] = spec.pop("finalizers")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"restartPolicy": restart, "containers": list(containers), **spec},
    }


@pytest.fixture
def apply(cluster: Cluster, namespace: str) -> Callable[..., None]:
    """`kubectl apply` manifests (dicts) into the test's namespace, in order."""

    def apply_(*manifests: Json, ns: str = namespace) -> None:
        listing = {"apiVersion": "v1", "kind": "List", "items": list(manifests)}
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(listing))

    return apply_


@pytest.fixture
def reporter(apply: Callable[..., None]) -> str:
    """ServiceAccount `reporter`, allowed to read ConfigMaps and patch `results`, nothing else."""
    apply(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reporter"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "results"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "reporter"},
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": ["results"],
                    "verbs": ["patch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "reporter"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "reporter",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reporter"}],
        },
    )
    return "reporter"


@pytest.fixture
def read_pod(core_api: client.CoreV1Api, namespace: str) -> Callable[..., Json | None]:
    """The pod as JSON, or None once it is gone."""

    def read(name: str, ns: str = namespace) -> Json | None:
        try:
            response: Any = core_api.read_namespaced_pod(name, ns, _preload_content=False)
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise
        return dict(json.loads(response.data))

    return read


@pytest.fixture
def results(core_api: client.CoreV1Api, namespace: str) -> Callable[[], dict[str, str]]:
    return lambda: dict(core_api.read_namespaced_config_map("results", namespace).data or {})


@pytest.fixture
def pod_in_phase(
    read_pod: Callable[..., Json | None], wait_for: Callable[..., Any]
) -> Callable[..., Json]:
    def wait(name: str, phase: str, timeout: float = 60, ns: str | None = None) -> Json:
        def reached() -> Json | None:
            pod = read_pod(name, ns) if ns else read_pod(name)
            return pod if pod and pod["status"].get("phase") == phase else None

        return dict(wait_for(reached, timeout=timeout, message=f"pod {name} to be {phase}"))

    return wait


@pytest.fixture
def container_waiting(
    read_pod: Callable[..., Json | None], wait_for: Callable[..., Any]
) -> Callable[..., Json]:
    """Wait until the pod's first container waits for `reason`; returns its waiting state."""

    def wait(name: str, reason: str) -> Json:
        def waiting() -> Json | None:
            pod = read_pod(name)
            statuses = pod["status"].get("containerStatuses") if pod else None
            state = statuses[0]["state"].get("waiting") if statuses else None
            return state if state and state["reason"] == reason else None

        return dict(wait_for(waiting, message=f"container of pod {name} waiting with {reason}"))

    return wait


def container_status(pod: Json, name: str = "main") -> Json:
    return next(s for s in pod["status"]["containerStatuses"] if s["name"] == name)


def container_of(pod: Json) -> str:
    return str(container_status(pod)["containerID"])


def container_alive(container_id: str) -> bool:
    """Its process still runs: podman says `stopping` between a stop's SIGTERM and its end."""
    return container_state(container_id) in ("running", "stopping")


def test_the_node_is_ready_untainted_and_renews_its_lease(
    cluster: Cluster, wait_for: Callable[..., Any]
) -> None:
    node = cluster.kubectl_json("get", "node", "local-node")
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    taints = {t["key"] for t in node["spec"].get("taints", [])}
    assert not taints & {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    assert node["metadata"]["labels"]["kubernetes.io/os"] == "linux"
    assert node["status"]["capacity"]["cpu"] == str(os.cpu_count())
    assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("podman://")
    server = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert node["status"]["nodeInfo"]["kubeletVersion"] == server["gitVersion"]

    def renew_time() -> str:
        lease = cluster.kubectl_json("get", "lease", "local-node", "-n", "kube-node-lease")
        return str(lease["spec"]["renewTime"])

    first = renew_time()
    wait_for(lambda: renew_time() != first, timeout=30, message="the node's lease to be renewed")


def test_a_deployment_gets_a_replicaset_whose_pod_the_node_runs(
    cluster: Cluster, namespace: str, apply: Callable[..., None], wait_for: Callable[..., Any]
) -> None:
    template = pod_manifest("web", python_container("import time; time.sleep(3600)"))
    del template["apiVersion"], template["kind"], template["metadata"]["name"]
    template["spec"]["restartPolicy"] = "Always"
    apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": template,
            },
        }
    )

    def owned(kind: str, owner_kind: str, owner: str) -> list[Json]:
        items = cluster.kubectl_json("get", kind, "-n", namespace)["items"]
        return [
            item
            for item in items
            if any(
                ref["kind"] == owner_kind and ref["name"] == owner
                for ref in item["metadata"].get("ownerReferences", [])
            )
        ]

    replicaset = wait_for(
        lambda: owned("replicasets", "Deployment", "web"), message="the Deployment's ReplicaSet"
    )
    rs_name = replicaset[0]["metadata"]["name"]

    def running_pod() -> Json | None:
        pods = owned("pods", "ReplicaSet", rs_name)
        return pods[0] if pods and pods[0]["status"].get("phase") == "Running" else None

    pod = wait_for(running_pod, timeout=60, message="the Deployment's pod to run")
    assert pod["spec"]["nodeName"] == "local-node"
    assert ipaddress.IPv4Address(pod["status"]["podIP"]) in ipaddress.IPv4Network("127.0.0.0/8")
    assert pod["status"]["hostIP"] == "127.0.0.1"
    status = container_status(pod)
    assert "running" in status["state"] and status["started"] is True
    assert container_alive(container_of(pod))

    def available() -> bool:
        deployment = cluster.kubectl_json("get", "deployment", "web", "-n", namespace)
        return bool(deployment["status"].get("availableReplicas") == 1)

    wait_for(available, timeout=60, message="the Deployment to report 1 available replica")


def test_the_container_sees_its_env_and_is_only_allowed_what_rbac_grants(
    cluster: Cluster,
    namespace: str,
    apply: Callable[..., None],
    reporter: str,
    results: Callable[[], dict[str, str]],
    pod_in_phase: Callable[..., Json],
) -> None:
    script = """
    from kubernetes.client import ApiException
    who = client.AuthenticationV1Api(api.api_client).create_self_subject_review(
        client.V1SelfSubjectReview()
    ).status.user_info.username
    configmaps = sorted(c.metadata.name for c in api.list_namespaced_config_map(ns).items)
    try:
        api.list_namespaced_secret(ns)
        secrets = "allowed"
    except ApiException as e:
        secrets = e.status
    try:
        api.patch_namespaced_config_map("settings", ns, {"data": {"color": "red"}})
        patch_other = "allowed"
    except ApiException as e:
        patch_other = e.status
    token_file = config.incluster_config.SERVICE_TOKEN_FILENAME
    account = sorted(os.listdir(os.path.dirname(token_file)))
    record(who=who, configmaps=json.dumps(configmaps), secrets=secrets,
           patch_other=patch_other, account=json.dumps(account), env=json.dumps(dict(os.environ)))
    """

    def field(path: str) -> Json:
        return {"fieldRef": {"fieldPath": path}}

    env = [
        {"name": "MY_NAME", "valueFrom": field("metadata.name")},
        {"name": "MY_UID", "valueFrom": field("metadata.uid")},
        {"name": "MY_NODE", "valueFrom": field("spec.nodeName")},
        {"name": "MY_ACCOUNT", "valueFrom": field("spec.serviceAccountName")},
        {"name": "MY_IP", "valueFrom": field("status.podIP")},
        {"name": "MY_HOST_IP", "valueFrom": field("status.hostIP")},
        {"name": "MY_APP", "valueFrom": field("metadata.labels['app']")},
        {"name": "GREETING", "value": "hello $(MY_NAME)"},
        {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
    ]
    apply(
        config_map("settings", {"color": "blue", "size": "xl"}),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"password": "hunter2"},
        },
        pod_manifest(
            "envcheck",
            reporting_container(
                script, env=env, envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}]
            ),
            serviceAccountName=reporter,
        ),
    )

    pod = pod_in_phase("envcheck", "Succeeded")

    terminated = container_status(pod)["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    report = results()
    assert report["who"] == f"system:serviceaccount:{namespace}:reporter"
    assert json.loads(report["configmaps"]) == ["kube-root-ca.crt", "results", "settings"]
    assert report["secrets"] == "403"
    assert report["patch_other"] == "403"
    assert json.loads(report["account"]) == ["ca.crt", "namespace", "token"]
    env_seen = json.loads(report["env"])
    expected = {
        "POD_NAMESPACE": namespace,
        "MY_NAME": "envcheck",
        "MY_UID": pod["metadata"]["uid"],
        "MY_NODE": "local-node",
        "MY_ACCOUNT": "reporter",
        "MY_IP": pod["status"]["podIP"],
        "MY_HOST_IP": "127.0.0.1",
        "MY_APP": "envcheck",
        "GREETING": "hello envcheck",
        "COLOR": "blue",
        "PASSWORD": "hunter2",
        "CFG_color": "blue",
        "CFG_size": "xl",
        "HOSTNAME": "envcheck",
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(urlsplit(cluster.server).port),
    }
    assert {key: env_seen.get(key) for key in expected} == expected
    assert env_seen["PATH"].split(":")[0] == "/opt/venv/bin", "the image's own PATH"
    assert "KUBECONFIG" not in env_seen, "the token is the projected volume, not a kubeconfig"


def test_a_pod_that_does_not_automount_a_token_gets_none(
    apply: Callable[..., None], pod_in_phase: Callable[..., Json]
) -> None:
    script = f"import os, sys; sys.exit(7 if os.path.exists({SA_DIR!r}) else 0)"
    apply(pod_manifest("notoken", python_container(script), automountServiceAccountToken=False))
    pod = pod_in_phase("notoken", "Succeeded")
    assert container_status(pod)["state"]["terminated"]["exitCode"] == 0


def test_deleting_a_pod_sends_sigterm_then_sigkill_once_the_grace_period_is_over(
    core_api: client.CoreV1Api,
    namespace: str,
    apply: Callable[..., None],
    reporter: str,
    results: Callable[[], dict[str, str]],
    read_pod: Callable[..., Json | None],
    pod_in_phase: Callable[..., Json],
    wait_for: Callable[..., Any],
) -> None:
    grace = 4
    script = """
    signal.signal(signal.SIGTERM, lambda *_: record(sigterm=repr(time.time())))
    record(ready="yes")
    while True:
        time.sleep(0.1)
    """
    apply(
        pod_manifest(
            "stubborn",
            reporting_container(script),
            serviceAccountName=reporter,
            terminationGracePeriodSeconds=grace,
            finalizers=[FINALIZER],
        )
    )
    pod = pod_in_phase("stubborn", "Running")
    container = container_of(pod)
    wait_for(lambda: results().get("ready") == "yes", message="the process to start")

    core_api.delete_namespaced_pod("stubborn", namespace)

    sigterm_at = float(wait_for(lambda: results().get("sigterm"), message="SIGTERM"))
    assert container_alive(container), "it must outlive SIGTERM until the grace period ends"

    def terminated() -> Json | None:
        found = read_pod("stubborn")
        state = container_status(found)["state"] if found else {}
        return state.get("terminated")

    end = wait_for(terminated, timeout=grace + 30, message="the container to be terminated")
    assert end["exitCode"] == 137
    finished = datetime.fromisoformat(end["finishedAt"]).timestamp()
    assert finished >= sigterm_at + grace - 1, "SIGKILL came before the grace period was over"
    # Removed after the status reports the exit, off the pod's critical path (podcontainer.py).
    wait_for(
        lambda: container_state(container) is None,
        timeout=60,
        message="the node to remove the exited container",
    )
    final = read_pod("stubborn")
    assert final is not None and final["status"]["phase"] == "Failed"

    core_api.patch_namespaced_pod("stubborn", namespace, {"metadata": {"finalizers": None}})
    wait_for(lambda: read_pod("stubborn") is None, message="the pod to be gone")


def test_force_deletion_kills_the_container_at_once(
    core_api: client.CoreV1Api,
    namespace: str,
    apply: Callable[..., None],
    pod_in_phase: Callable[..., Json],
    wait_for: Callable[..., Any],
) -> None:
    script = """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(3600)
    """
    apply(pod_manifest("forced", python_container(script), terminationGracePeriodSeconds=300))
    container = container_of(pod_in_phase("forced", "Running"))
    core_api.delete_namespaced_pod("forced", namespace, grace_period_seconds=0)
    wait_for(lambda: not container_alive(container), timeout=20, message="the container killed")


def test_on_failure_restarts_a_failing_container_until_it_succeeds(
    apply: Callable[..., None], pod_in_phase: Callable[..., Json]
) -> None:
    script = """
    import os, sys
    path = "/state/attempts"
    attempts = int(open(path).read()) + 1 if os.path.exists(path) else 1
    open(path, "w").write(str(attempts))
    sys.exit(0 if attempts >= 3 else 5)
    """
    container = python_container(script, volumeMounts=[STATE_MOUNT])
    apply(pod_manifest("flaky", container, restart="OnFailure", volumes=[STATE_VOLUME]))
    status = container_status(pod_in_phase("flaky", "Succeeded"))
    assert status["restartCount"] == 2
    assert status["state"]["terminated"]["exitCode"] == 0
    assert status["state"]["terminated"]["reason"] == "Completed"
    assert status["lastState"]["terminated"]["exitCode"] == 5
    assert status["lastState"]["terminated"]["reason"] == "Error"


def test_always_restarts_a_crashing_container_with_backoff(
    apply: Callable[..., None], read_pod: Callable[..., Json | None], wait_for: Callable[..., Any]
) -> None:
    apply(pod_manifest("crasher", python_container("import sys; sys.exit(3)"), restart="Always"))

    def restarted_twice() -> Json | None:
        pod = read_pod("crasher")
        statuses = pod["status"].get("containerStatuses") if pod else None
        return pod if statuses and statuses[0]["restartCount"] >= 2 else None

    pod = wait_for(restarted_twice, timeout=60, message="two restarts")
    assert pod["status"]["phase"] == "Running"
    status = container_status(pod)
    assert status["lastState"]["terminated"]["exitCode"] == 3
    state = status["state"]
    assert "running" in state or state["waiting"]["reason"] == "CrashLoopBackOff"
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" or "running" in state


def test_never_reports_each_exit_code_and_fails_the_pod(
    apply: Callable[..., None], pod_in_phase: Callable[..., Json]
) -> None:
    apply(
        pod_manifest(
            "mixed",
            python_container("pass", name="good"),
            python_container("import sys; sys.exit(4)", name="bad"),
        )
    )
    pod = pod_in_phase("mixed", "Failed")
    good, bad = container_status(pod, "good"), container_status(pod, "bad")
    good_end, bad_end = good["state"]["terminated"], bad["state"]["terminated"]
    assert (good_end["exitCode"], good_end["reason"]) == (0, "Completed")
    assert (bad_end["exitCode"], bad_end["reason"]) == (4, "Error")
    assert good["restartCount"] == bad["restartCount"] == 0


def test_init_containers_run_first_and_output_goes_to_the_pod_log(
    cluster: Cluster, namespace: str, apply: Callable[..., None], pod_in_phase: Callable[..., Json]
) -> None:
    init = python_container(
        "open('/state/ready', 'w').write('ok'); print('init out')",
        name="setup",
        volumeMounts=[STATE_MOUNT],
    )
    main = python_container(
        "import sys; print('main out'); print('main err', file=sys.stderr);"
        "sys.exit(0 if open('/state/ready').read() == 'ok' else 9)",
        volumeMounts=[STATE_MOUNT],
    )
    apply(pod_manifest("staged", main, initContainers=[init], volumes=[STATE_VOLUME]))
    pod = pod_in_phase("staged", "Succeeded")
    setup = pod["status"]["initContainerStatuses"][0]
    assert setup["state"]["terminated"]["exitCode"] == 0
    log = (cluster.paths.node_state / "logs" / f"{namespace}_staged.log").read_text()
    assert log.index("init out") < log.index("main out")
    assert "main err" in log
    assert "container setup starts" in log and "container main starts" in log


def test_a_missing_config_map_holds_the_container_until_it_exists(
    apply: Callable[..., None],
    container_waiting: Callable[..., Json],
    pod_in_phase: Callable[..., Json],
) -> None:
    ref = {"configMapKeyRef": {"name": "late", "key": "value"}}
    script = "import os, sys; sys.exit(0 if os.environ['LATE'] == 'here' else 1)"
    env = [{"name": "LATE", "valueFrom": ref}]
    apply(pod_manifest("waiter", python_container(script, env=env)))
    waiting = container_waiting("waiter", "CreateContainerConfigError")
    assert 'configmap "late" not found' in waiting["message"]
    apply(config_map("late", {"value": "here"}))
    pod_in_phase("waiter", "Succeeded", timeout=90)


def test_a_container_without_a_command_runs_the_images_entrypoint_with_its_args(
    cluster: Cluster, namespace: str, apply: Callable[..., None], pod_in_phase: Callable[..., Json]
) -> None:
    container = python_container("unused", args=["collectjob-operator", "--help"])
    del container["command"]
    apply(pod_manifest("imageonly", container))
    pod_in_phase("imageonly", "Succeeded")
    log = (cluster.paths.node_state / "logs" / f"{namespace}_imageonly.log").read_text()
    assert "usage: collectjob-operator" in log, log[-2000:]


def test_a_host_path_volume_is_mounted_where_the_pod_asks(
    make_namespace: Callable[..., str],
    apply: Callable[..., None],
    pod_in_phase: Callable[..., Json],
    tmp_path: Path,
) -> None:
    # hostPath is forbidden by the restricted (and baseline) standard: a privileged namespace.
    ns = make_namespace({"pod-security.kubernetes.io/enforce": "privileged"})
    target = tmp_path / "shared"
    target.mkdir()
    grant_rwx(target, CONTAINER_SECURITY["runAsUser"])
    script = "open('/mnt/shared/out.txt', 'w').write('written by the pod')"
    volume = {"name": "shared", "hostPath": {"path": str(target), "type": "Directory"}}
    mount = {"name": "shared", "mountPath": "/mnt/shared"}
    apply(
        pod_manifest("writer", python_container(script, volumeMounts=[mount]), volumes=[volume]),
        ns=ns,
    )
    pod_in_phase("writer", "Succeeded", ns=ns)
    assert (target / "out.txt").read_text() == "written by the pod"
