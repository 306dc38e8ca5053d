"""The local control plane is a real one: pinned version, RBAC, garbage collection."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest
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
    cluster.kubectl(
        "create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps", "-n", namespace
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
    allowed = cluster.kubectl("auth", "can-i", "list", "configmaps", "-n", namespace, who)
    assert allowed.stdout.strip() == "yes"


def _etcd_health(cluster: Cluster, client_cert: str | None) -> str:
    port = json.loads(cluster.paths.state_file.read_text())["ports"]["etcd_client"]
    pki = cluster.paths.pki
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if client_cert:
        context.load_cert_chain(str(pki / f"{client_cert}.crt"), str(pki / f"{client_cert}.key"))
    url = f"https://127.0.0.1:{port}/health"
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        return str(json.loads(response.read())["health"])


def test_etcd_accepts_only_clients_with_a_certificate_from_the_local_ca(
    cluster: Cluster,
) -> None:
    assert _etcd_health(cluster, "apiserver-etcd-client") == "true"
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        _etcd_health(cluster, None)
    port = json.loads(cluster.paths.state_file.read_text())["ports"]["etcd_client"]
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)


def test_the_local_pki_leaves_no_signing_requests_or_serials(cluster: Cluster) -> None:
    leftovers = [p.name for p in cluster.paths.pki.iterdir() if p.suffix in (".csr", ".srl")]
    assert leftovers == []
