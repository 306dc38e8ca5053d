"""The operator's rights in both install modes, and what even it may not write.

Each install is applied from the real kustomize trees (`deploy/`, `deploy/namespaced/`) with
the project's kubectl, without the operator Deployment (the rights are the subject here, and
a cluster-wide operator would race the other tests' operators). `kubectl auth can-i --list`
for the operator's ServiceAccount must then equal the verb table in README.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml

from collectjob_api.contract import worker_labels
from collectjob_operator import manifests
from collectjob_operator.job import CollectJob
from conftest import poll
from localcluster.client import Cluster
from localcluster.paths import REPO_ROOT as ROOT
from operator_fixtures import write_csv
from storage_fixtures import provide_data_volume, remove_data_volume

SYSTEM_NS = "collectjob-system"
WATCHED_NS = "collectjob-jobs"
OPERATOR = f"system:serviceaccount:{SYSTEM_NS}:collectjob-operator"
EVERY_USER = {
    "selfsubjectreviews.authentication.k8s.io",
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
}
"""Granted to every authenticated user by Kubernetes itself (system:basic-user)."""
SHARED = {
    "CustomResourceDefinition",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
"""The session's CRD and its policy stay installed; the rest of an install is removed."""


def verb_table() -> dict[str, tuple[set[str], set[str]]]:
    """README's table: resource -> (cluster-wide verbs, namespaced verbs in a watched one)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("**The operator's rights.**") :]
    lines = table.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| `"))
    rows = {}
    for line in lines[first:]:
        if not line.startswith("| `"):
            break
        cells = [c.strip() for c in line.split("|")[1:-1]]
        rows[cells[0].strip("`")] = (verbs(cells[1]), verbs(cells[2]))
    return rows


def verbs(cell: str) -> set[str]:
    return set(re.findall(r"[a-z]+", cell.split("(")[0]))


def can_i_list(cluster: Cluster, namespace: str) -> dict[str, set[str]]:
    """`kubectl auth can-i --list` for the operator in `namespace`: resource[/name] -> verbs."""
    out = cluster.kubectl("auth", "can-i", "--list", f"--as={OPERATOR}", "-n", namespace).stdout
    header, *rows = out.splitlines()
    urls, names, verbs_at = (
        header.index(h) for h in ("Non-Resource URLs", "Resource Names", "Verbs")
    )
    granted: dict[str, set[str]] = {}
    for row in rows:
        resource = row[:urls].strip()
        if not resource or resource in EVERY_USER:
            continue
        resource_names = row[names:verbs_at].strip().strip("[]").split() or [""]
        for name in resource_names:
            key = f"{resource}/{name}" if name else resource
            granted.setdefault(key, set()).update(row[verbs_at:].strip().strip("[]").split())
    return granted


@contextmanager
def installed(cluster: Cluster, tree: str, with_operator: bool = False) -> Iterator[None]:
    """Apply a kustomize tree, without its operator Deployment unless `with_operator`;
    remove it afterwards."""
    rendered = cluster.kubectl("kustomize", str(ROOT / tree)).stdout
    docs = [
        d
        for d in yaml.safe_load_all(rendered)
        if d and (with_operator or d["kind"] != "Deployment")
    ]
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(docs)
    )
    try:
        yield
    finally:
        owned = [d for d in docs if d["kind"] not in SHARED or "operator" in d["metadata"]["name"]]
        cluster.kubectl(
            "delete",
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
            "-f",
            "-",
            input=yaml.safe_dump_all(owned),
            timeout=150,
        )


def test_cluster_wide_install_grants_exactly_the_verb_table(cluster, crd, namespace):
    expected = {resource: wide for resource, (wide, _) in verb_table().items()}
    with installed(cluster, "deploy"):
        assert can_i_list(cluster, namespace) == expected


def test_namespaced_install_grants_the_table_in_watched_namespaces_only(cluster, crd, namespace):
    table = verb_table()
    in_watched = {resource: scoped for resource, (_, scoped) in table.items()}
    cluster_scoped = {r: v for r, v in in_watched.items() if "admissionregistration" in r}
    with installed(cluster, "deploy/namespaced"):
        assert can_i_list(cluster, WATCHED_NS) == in_watched
        assert can_i_list(cluster, namespace) == cluster_scoped
        assert can_i_list(cluster, "kube-system") == cluster_scoped


def test_namespaced_operator_runs_a_job_with_only_its_namespaced_rights(
    cluster, core_api, crd, tmp_path, wait_for
):
    """The namespaced install's Role is enough for the whole life of a job."""
    source, sink = write_csv(tmp_path / "in.csv", 3000), tmp_path / "out"
    body = {
        "apiVersion": "collect.dev/v1alpha1",
        "kind": "CollectJob",
        "metadata": {"name": "scoped", "namespace": WATCHED_NS},
        "spec": {
            "source": {"url": f"file://{source}"},
            "sink": {"url": f"file://{sink}", "format": "jsonl"},
        },
    }
    with installed(cluster, "deploy/namespaced", with_operator=True):
        cluster.kubectl(
            "rollout",
            "status",
            "deployment/collectjob-operator",
            "-n",
            SYSTEM_NS,
            "--timeout=120s",
            timeout=150,
        )
        # The job's worker mounts this test's temp files from a claim in the watched namespace.
        data = provide_data_volume(cluster, core_api, WATCHED_NS, tmp_path, wait_for)
        body["spec"]["worker"] = data.worker
        try:
            cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))

            def phase() -> str | None:
                job = cluster.kubectl_json("get", "cjob", "scoped", "-n", WATCHED_NS)
                return (job.get("status") or {}).get("phase")

            wait_for(lambda: phase() == "Succeeded", timeout=180, message="phase Succeeded")
        finally:
            remove_data_volume(cluster, WATCHED_NS)
        rows = sum(len(p.read_text().splitlines()) for p in sink.glob("part-*"))
        assert rows == 3000


def test_worker_network_policy_is_accepted_and_selects_the_workers(cluster, namespace):
    """Only applied and read back: the local cluster has no CNI that would enforce it."""
    cluster.kubectl("apply", "-n", namespace, "-k", str(ROOT / "deploy" / "networkpolicy"))
    policy = cluster.kubectl_json("get", "networkpolicy", "collectjob-worker", "-n", namespace)
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= worker_labels("any-job").items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    internet = policy["spec"]["egress"][-1]["to"][0]["ipBlock"]
    assert "169.254.0.0/16" in internet["except"] and "10.0.0.0/8" in internet["except"]


# --- A compromised operator: its own RBAC allows these writes, the policy refuses them. ---


def worker_objects(namespace: str) -> dict[str, dict[str, Any]]:
    body = {
        "apiVersion": "collect.dev/v1alpha1",
        "kind": "CollectJob",
        "metadata": {
            "name": "etl",
            "namespace": namespace,
            "uid": "7d1c43f6-0000-4000-8000-000000000001",
            "generation": 1,
        },
        "spec": {"source": {"url": "file:///in.csv"}, "sink": {"url": "file:///out"}},
    }
    job = CollectJob.from_body(body)
    return {
        "Deployment": manifests.worker_deployment(job, "collectjob:dev", 1),
        "Role": manifests.role(job),
        "RoleBinding": manifests.role_binding(job),
        "ServiceAccount": manifests.service_account(job),
    }


def as_operator(cluster: Cluster, obj: dict[str, Any]):
    """Create `obj` as the operator, dry-run on the server: authorization and admission run,
    nothing is stored. A RoleBinding needs its Role to exist (RBAC's escalation check reads
    it), so the admin creates that Role first, without an owner the garbage collector would
    find missing."""
    if obj["kind"] == "RoleBinding":
        role = worker_objects(obj["metadata"]["namespace"])["Role"]
        del role["metadata"]["ownerReferences"]
        cluster.kubectl("apply", "-f", "-", input=json.dumps(role))
    return cluster.kubectl(
        "create",
        "--dry-run=server",
        f"--as={OPERATOR}",
        "-f",
        "-",
        input=json.dumps(obj),
        check=False,
    )


def pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


ATTACKS = {
    "hostPath volume": (
        "Deployment",
        lambda d: pod(d)["volumes"].append({"name": "root", "hostPath": {"path": "/"}}),
        "hostPath volumes are not allowed",
    ),
    "hostNetwork": (
        "Deployment",
        lambda d: pod(d).update(hostNetwork=True),
        "hostNetwork, hostPID and hostIPC are not allowed",
    ),
    "hostPID": (
        "Deployment",
        lambda d: pod(d).update(hostPID=True),
        "hostNetwork, hostPID and hostIPC are not allowed",
    ),
    "privileged": (
        "Deployment",
        lambda d: pod(d)["containers"][0]["securityContext"].update(
            privileged=True, allowPrivilegeEscalation=True
        ),
        "every worker container must be unprivileged",
    ),
    "privilege escalation": (
        "Deployment",
        lambda d: pod(d)["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True),
        "every worker container must be unprivileged",
    ),
    "added capability": (
        "Deployment",
        lambda d: pod(d)["containers"][0]["securityContext"].update(
            capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}
        ),
        "every worker container must be unprivileged",
    ),
    "another ServiceAccount": (
        "Deployment",
        lambda d: pod(d).update(serviceAccountName="default"),
        "must run as its own ServiceAccount etl-worker",
    ),
    "no owner": (
        "Deployment",
        lambda d: d["metadata"].pop("ownerReferences"),
        "whose controlling owner is the CollectJob etl",
    ),
    "no labels": (
        "ServiceAccount",
        lambda d: d["metadata"].pop("labels"),
        "may only write objects labelled collect.dev/job",
    ),
    "foreign name": (
        "ServiceAccount",
        lambda d: d["metadata"].update(name="ci-bot"),
        "may only write the child of its CollectJob, named etl-worker",
    ),
    "Role on another ConfigMap": (
        "Role",
        lambda r: r["rules"][0].update(resourceNames=["admin-config"]),
        "may grant only get, update and patch on its own checkpoint",
    ),
    "RoleBinding to another subject": (
        "RoleBinding",
        lambda b: b["subjects"].append(
            {"kind": "ServiceAccount", "name": "default", "namespace": b["metadata"]["namespace"]}
        ),
        "may bind only the Role etl-worker to the ServiceAccount",
    ),
}


@pytest.fixture(scope="module")
def cluster_wide(cluster: Cluster, crd: None) -> Iterator[None]:
    """The cluster-wide install, once its policy is enforced: the API server loads a new
    ValidatingAdmissionPolicy through an informer, so for a moment after `apply` writes still
    pass unchecked. The policy refusing a child without labels is the condition (not RBAC,
    whose own informer may lag too)."""
    with installed(cluster, "deploy"):
        unlabelled = worker_objects("default")["ServiceAccount"]
        del unlabelled["metadata"]["labels"]
        poll(
            lambda: "collectjob-operator-writes" in as_operator(cluster, unlabelled).stderr,
            timeout=60,
            message="the policy collectjob-operator-writes to refuse an unlabelled child",
        )
        yield


@pytest.mark.parametrize("kind", ["Deployment", "Role", "RoleBinding", "ServiceAccount"])
def test_operator_may_write_its_own_children(cluster, cluster_wide, namespace, kind):
    result = as_operator(cluster, worker_objects(namespace)[kind])
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_compromised_operator_writes_are_refused(cluster, cluster_wide, namespace, attack):
    kind, change, expected = ATTACKS[attack]
    obj = worker_objects(namespace)[kind]
    change(obj)
    result = as_operator(cluster, obj)
    assert result.returncode != 0
    assert "collectjob-operator-writes" in result.stderr and expected in result.stderr, (
        result.stderr
    )


def test_compromised_operator_cannot_run_a_pod_in_kube_system(cluster, cluster_wide):
    deployment = worker_objects("kube-system")["Deployment"]
    pod(deployment)["serviceAccountName"] = "kube-proxy"
    result = as_operator(cluster, deployment)
    assert result.returncode != 0
    assert "must run as its own ServiceAccount" in result.stderr
