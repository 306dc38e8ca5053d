"""A test's temp dir as node-local storage that worker pods mount, as an admin would offer it.

Cluster tests read their CSVs from, and write their sinks to, `tmp_path`, while workers run
in containers as uid 10001 in namespaces that enforce the restricted Pod Security Standard
(no hostPath volumes). So each test that runs a worker gets what a cluster admin provides
for node-local data: a hostPath PersistentVolume of `tmp_path`, pre-bound to the claim
`data` in the test's namespace. Pods mount the claim at the very same path, so `file://`
URLs mean the same file on the host and in the container, and the test reads the worker's
output where it was written. uid 10001 is granted rwx on `tmp_path` and, through a default
POSIX ACL, on everything later created under it (the test itself runs as root).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from collectjob_operator.manifests import WORKER_UID
from localcluster.client import Cluster

CLAIM = "data"
# POSIX ACL xattr layout (linux/posix_acl_xattr.h): a version, then (tag, perm, id) entries
# sorted by tag; ids matter only for named users and groups.
ACL_VERSION = 2
USER_OBJ, USER, GROUP_OBJ, MASK, OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
NO_ID = 0xFFFFFFFF


def grant_rwx(path: Path, uid: int) -> None:
    """uid gets rwx on `path` and on whatever is created under it from now on."""
    entries = [(USER_OBJ, 7, NO_ID), (USER, 7, uid), (GROUP_OBJ, 5, NO_ID), (MASK, 7, NO_ID)]
    acl = struct.pack("<I", ACL_VERSION) + b"".join(
        struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in [*entries, (OTHER, 5, NO_ID)]
    )
    os.setxattr(path, "system.posix_acl_access", acl)
    os.setxattr(path, "system.posix_acl_default", acl)


@dataclass(frozen=True)
class DataVolume:
    """The claim `data` in one namespace, bound to the host directory `path`."""

    path: Path
    claim: str = CLAIM

    @property
    def worker(self) -> dict[str, Any]:
        """The CollectJob `spec.worker` fields that mount it at its own path."""
        return {
            "volumes": [{"name": self.claim, "persistentVolumeClaim": {"claimName": self.claim}}],
            "volumeMounts": [{"name": self.claim, "mountPath": str(self.path)}],
        }

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
    storage = {"storage": "1Gi"}
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{namespace}-{CLAIM}"},
        "spec": {
            "capacity": storage,
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": namespace, "name": CLAIM},
            "hostPath": {"path": str(path), "type": "Directory"},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": CLAIM, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": storage},
            "storageClassName": "",
            "volumeName": volume["metadata"]["name"],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([volume, claim]))
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
    cluster.kubectl(
        "delete", "pv", f"{namespace}-{CLAIM}", "--ignore-not-found", "--wait=false", check=False
    )


@pytest.fixture
def data_volume(
    cluster: Cluster, core_api: client.CoreV1Api, namespace: str, tmp_path: Path, wait_for
) -> Iterator[DataVolume]:
    """`tmp_path` as the claim `data` in the test's namespace (see the module docstring)."""
    yield provide_data_volume(cluster, core_api, namespace, tmp_path, wait_for)
    remove_data_volume(cluster, namespace)
