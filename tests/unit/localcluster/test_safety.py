"""The test tooling refuses any API server that is not on loopback."""

from __future__ import annotations

import json

import pytest

from localcluster.client import Cluster
from localcluster.nodeapi import NodeApi
from localcluster.paths import ClusterPaths
from localcluster.safety import require_loopback


@pytest.mark.parametrize(
    "server",
    [
        "https://10.0.0.1:6443",
        "https://kubernetes.example.com",
        "https://192.168.1.5",
        "https://127.attacker.example",
        "https://127.0.0.1.nip.io:6443",
        "https://localhost.attacker.example",
        "https://[::ffff:10.0.0.1]:6443",
        "not a url",
    ],
)
def test_non_loopback_api_servers_are_refused(server: str, tmp_path) -> None:
    with pytest.raises(RuntimeError, match="not on loopback"):
        require_loopback(server)
    with pytest.raises(RuntimeError, match="not on loopback"):
        Cluster(paths=ClusterPaths(tmp_path), server=server)


@pytest.mark.parametrize(
    "server",
    ["https://127.0.0.1:6443", "https://localhost:1", "https://[::1]:2", "https://127.1.0.7"],
)
def test_loopback_api_servers_are_accepted(server: str) -> None:
    require_loopback(server)


def test_the_node_agent_refuses_a_kubeconfig_without_a_certificate_authority(tmp_path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    with pytest.raises(ValueError, match="names no certificate authority"):
        NodeApi.from_kubeconfig(kubeconfig)
    config = json.loads(kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.attacker.example:6443"
    kubeconfig.write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="not on loopback"):
        NodeApi.from_kubeconfig(kubeconfig)
