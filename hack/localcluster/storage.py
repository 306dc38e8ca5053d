"""Node-local storage offered to pods as an admin offers it: a claim bound to a host directory.

Workers run as uid 10001 in namespaces that may enforce the restricted Pod Security
Standard, and the operator's own admission policy refuses hostPath volumes in worker pods,
so a host directory reaches a worker the way a cluster admin provides node-local data: a
hostPath PersistentVolume of the directory, pre-bound to a claim in the job's namespace,
which the worker mounts (`spec.worker.volumes`). uid 10001 is granted rwx on the directory
and, through a default POSIX ACL, on everything later created under it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

# POSIX ACL xattr layout (linux/posix_acl_xattr.h): a version, then (tag, perm, id) entries
# sorted by tag; ids matter only for named users and groups.
ACL_VERSION = 2
USER_OBJ, USER, GROUP_OBJ, MASK, OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
NO_ID = 0xFFFFFFFF


def grant_rwx(path: Path, uid: int) -> None:
    """uid gets rwx on `path` and on whatever is created under it from now on."""
    entries = [
        (USER_OBJ, 7, NO_ID),
        (USER, 7, uid),
        (GROUP_OBJ, 5, NO_ID),
        (MASK, 7, NO_ID),
        (OTHER, 5, NO_ID),
    ]
    acl = struct.pack("<I", ACL_VERSION) + b"".join(
        struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries
    )
    os.setxattr(path, "system.posix_acl_access", acl)
    os.setxattr(path, "system.posix_acl_default", acl)


def volume_name(namespace: str, claim: str) -> str:
    return f"{namespace}-{claim}"


def claim_manifests(namespace: str, claim: str, path: Path) -> list[dict[str, Any]]:
    """The PersistentVolume of `path` and the claim `claim` in `namespace`, bound to each other."""
    storage = {"storage": "1Gi"}
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume_name(namespace, claim)},
        "spec": {
            "capacity": storage,
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": namespace, "name": claim},
            "hostPath": {"path": str(path), "type": "Directory"},
        },
    }
    bound = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": storage},
            "storageClassName": "",
            "volumeName": volume_name(namespace, claim),
        },
    }
    return [volume, bound]


def worker_mount(claim: str, path: Path) -> dict[str, Any]:
    """The CollectJob `spec.worker` fields that mount the claim at `path`, its host path."""
    return {
        "volumes": [{"name": claim, "persistentVolumeClaim": {"claimName": claim}}],
        "volumeMounts": [{"name": claim, "mountPath": str(path)}],
    }
