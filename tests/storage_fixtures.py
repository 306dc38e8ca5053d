"""A test's temp dir as node-local storage that worker pods mount, as an admin would offer it.

Cluster tests read their CSVs from, and write their sinks to, `tmp_path`, while workers run
in containers as uid 10001 in namespaces that enforce the restricted Pod Security Standard
(no hostPath volumes). So each test that runs a worker gets what a cluster admin provides
for node-local data: a hostPath PersistentVolume of `tmp_path`, pre-bound to the claim
`data` in the test's namespace. Pods mount the claim at the very same path, so `file://`
URLs mean the same file on the host and in the container, and the test reads the worker's
output where it was written. uid 10001 is granted rwx on `tmp_path` and on everything later
created under it (localcluster.storage; the test itself runs as root).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from collectjob_operator.manifests import WORKER_UID
from localcluster.client import Cluster
from localcluster.storage import claim_manifests, grant_rwx, volume_name, worker_mount

CLAIM = "data"


@dataclass(frozen=True)
class DataVolume:
    """The claim `data` in one namespace, bound to the host directory `path`."""

    path: Path
    claim: str = CLAIM

    @property
    def worker(self) -> dict[str, Any]:
        """The CollectJob `spec.worker` fields that mount it at its own path."""
        return worker_mount(self.claim, self.path)

    def into(self, worker: dict[str, Any] | None) -> dict[str, Any]:
        """`worker` (a CollectJob's spec.worker) with this volume added to its own volumes."""
        worker = dict(worker or {})
        for key, items in self.worker.items():
            worker[key] = [*items, *worker.get(key, [])]
        return worker


def provide_data_volume(
    cluster: Cluster, core_api: client.CoreV1Api, namespace: str, path: Path, wait_for
) -> DataVolume:
    """Create the PersistentVolume of `path` and the claim that is bound to it; returns once
    the claim is Bound (the node mounts only bound claims, as a kubelet)."""
    grant_rwx(path, WORKER_UID)
    manifests = claim_manifests(namespace, CLAIM, path)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests))
    wait_for(
        lambda: (
            core_api.read_namespaced_persistent_volume_claim(CLAIM, namespace).status.phase
            == "Bound"
        ),
        timeout=60,
        message=f"claim {CLAIM} in {namespace} to be bound",
    )
    return DataVolume(path)


def remove_data_volume(cluster: Cluster, namespace: str) -> None:
    """The PersistentVolume outlives its namespace (Retain): delete it, without waiting for
    the claim's pods to go (its protection finalizer holds it until then)."""
    name = volume_name(namespace, CLAIM)
    cluster.kubectl("delete", "pv", name, "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture
def data_volume(
    cluster: Cluster, core_api: client.CoreV1Api, namespace: str, tmp_path: Path, wait_for
) -> Iterator[DataVolume]:
    """`tmp_path` as the claim `data` in the test's namespace (see the module docstring)."""
    yield provide_data_volume(cluster, core_api, namespace, tmp_path, wait_for)
    remove_data_volume(cluster, namespace)
