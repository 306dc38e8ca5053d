"""The local control plane is a real one: pinned version, RBAC, garbage collection."""

from __future__ import annotations

import json

from kubernetes import client

from localcluster.client import Cluster

PINNED_VERSION = "v1.36.3"


def test_kubectl_reports_the_pinned_server_version(cluster: Cluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == PINNED_VERSION
    assert version["clientVersion"]["gitVersion"] == PINNED_VERSION


def test_api_server_is_on_loopback_and_ready(cluster: Cluster) -> None:
    assert cluster.server.startswith("https://127.0.0.1:")
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_deleting_an_owner_garbage_collects_what_it_owns(
    cluster: Cluster, core_api: client.CoreV1Api, namespace: str, wait_for
) -> None:
    owner = core_api.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    core_api.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="child", owner_references=[ref])),
    )
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)

    def child_gone() -> bool:
        names = [cm.metadata.name for cm in core_api.list_namespaced_config_map(namespace).items]
        return "child" not in names

    wait_for(child_gone, timeout=60, message="the garbage collector to delete the child")


def test_rbac_is_enforced_for_service_accounts(cluster: Cluster, namespace: str) -> None:
    who = f"--as=system:serviceaccount:{namespace}:default"
    denied = cluster.kubectl("auth", "can-i", "list", "secrets", "-n", namespace, who, check=False)
    assert denied.stdout.strip() == "no"
    cluster.kubectl("create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps",
                    "-n", namespace)  # fmt: skip
    cluster.kubectl("create", "rolebinding", "cm-reader", "--role=cm-reader",
                    f"--serviceaccount={namespace}:default", "-n", namespace)  # fmt: skip
    allowed = cluster.kubectl("auth", "can-i", "list", "configmaps", "-n", namespace, who)
    assert allowed.stdout.strip() == "yes"
