"""The operator installed with `kubectl apply -k deploy/`, running as the pod deploy/ defines.

The pod runs on the local node under its own ServiceAccount, in a namespace that enforces
the restricted Pod Security Standard, so this exercises deploy/'s RBAC and security
context for real. It is cluster-wide, so this module installs it only for its own tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from localcluster.client import Cluster
from localcluster.paths import REPO_ROOT as ROOT

SYSTEM_NS = "collectjob-system"
OPERATOR_SA = f"system:serviceaccount:{SYSTEM_NS}:collectjob-operator"


@pytest.fixture(scope="module")
def installed(cluster: Cluster, crd: None) -> Iterator[None]:
    cluster.kubectl("apply", "-k", str(ROOT / "deploy"))
    cluster.kubectl(
        "rollout", "status", "deployment/collectjob-operator", "-n", SYSTEM_NS, "--timeout=120s"
    )
    yield
    cluster.kubectl("delete", "namespace", SYSTEM_NS, "--wait=true", "--timeout=120s")
    cluster.kubectl("delete", "clusterrolebinding,clusterrole", "collectjob-operator")


def can(cluster: Cluster, *args: str) -> str:
    result = cluster.kubectl("auth", "can-i", *args, f"--as={OPERATOR_SA}", check=False)
    return result.stdout.strip()


def test_operator_pod_is_admitted_as_restricted_and_runs(cluster, installed):
    labels = cluster.kubectl_json("get", "namespace", SYSTEM_NS)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = cluster.kubectl_json(
        "get", "pods", "-n", SYSTEM_NS, "-l", "app.kubernetes.io/name=collectjob-operator"
    )["items"]
    (pod,) = pods
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["serviceAccountName"] == "collectjob-operator"


@pytest.mark.parametrize(
    "args",
    [
        ("watch", "collectjobs.collect.dev", "--all-namespaces"),
        ("patch", "collectjobs.collect.dev", "--subresource=status", "-n", "any"),
        ("create", "deployments.apps", "-n", "any"),
        ("patch", "deployments.apps", "-n", "any"),
        ("update", "configmaps", "-n", "any"),
        ("delete", "pods", "-n", "any"),
        ("list", "pods", "--all-namespaces"),
        ("get", "collectjobs.collect.dev", "-n", "any"),
        ("create", "roles.rbac.authorization.k8s.io", "-n", "any"),
        ("create", "rolebindings.rbac.authorization.k8s.io", "-n", "any"),
        ("create", "serviceaccounts", "-n", "any"),
        ("create", "events", "-n", "any"),
    ],
)
def test_operator_can_do_what_it_needs(cluster, installed, args):
    assert can(cluster, *args) == "yes"


@pytest.mark.parametrize(
    "args",
    [
        ("get", "secrets", "-n", SYSTEM_NS),
        ("list", "secrets", "--all-namespaces"),
        ("delete", "collectjobs.collect.dev", "-n", "any"),
        ("patch", "collectjobs.collect.dev", "-n", "any"),
        ("delete", "deployments.apps", "-n", "any"),
        ("create", "pods", "-n", "any"),
        ("get", "pods", "-n", "any"),
        ("get", "collectjobs.collect.dev", "--subresource=status", "-n", "any"),
        ("delete", "namespaces"),
        ("escalate", "roles.rbac.authorization.k8s.io", "-n", "any"),
        ("bind", "clusterroles.rbac.authorization.k8s.io"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ],
)
def test_operator_cannot_do_more(cluster, installed, args):
    assert can(cluster, *args) == "no"


def test_operator_pod_runs_a_job_to_success(installed, collectjob, wait_for):
    job = collectjob(rows=3000)
    wait_for(lambda: job.phase() == "Succeeded", timeout=180, message="phase Succeeded")
    assert job.output_ids() == job.source_ids()
    assert job.replicas() == 0, "the finished worker was scaled to zero"
    # Succeeded is reported with the scale-down; the pod's graceful exit may still be under way.
    wait_for(
        lambda: job.kubectl("get", "pods", "-o", "name").stdout.strip() == "",
        timeout=60,
        message="the finished worker pod to exit",
    )
