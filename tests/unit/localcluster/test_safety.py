"""The test tooling refuses any API server that is not on loopback."""

from __future__ import annotations

import pytest

from localcluster.client import Cluster
from localcluster.controlplane import require_loopback
from localcluster.paths import ClusterPaths


@pytest.mark.parametrize(
    "server", ["https://10.0.0.1:6443", "https://kubernetes.example.com", "https://192.168.1.5"]
)
def test_non_loopback_api_servers_are_refused(server: str, tmp_path) -> None:
    with pytest.raises(RuntimeError, match="not on loopback"):
        require_loopback(server)
    with pytest.raises(RuntimeError, match="not on loopback"):
        Cluster(paths=ClusterPaths(tmp_path), server=server)


@pytest.mark.parametrize(
    "server", ["https://127.0.0.1:6443", "https://localhost:1", "https://[::1]:2"]
)
def test_loopback_api_servers_are_accepted(server: str) -> None:
    require_loopback(server)
