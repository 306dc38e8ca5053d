"""The Node and Lease objects of the local node, built from facts about this machine.

The node lifecycle controller taints a node NotReady when its Lease in kube-node-lease is not
renewed within the grace period (40 s by default), and the scheduler then skips it; so the
agent renews the Lease every 10 s and refreshes the Ready heartbeat about every 40 s.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from collectjob_api.rfc3339 import format_time

HOST_IP = "127.0.0.1"
MAX_PODS = 110
LEASE_SECONDS = 40
# Taints the node lifecycle controller puts on a node it believes is down.
LIFECYCLE_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}


def parse_meminfo(text: str) -> int:
    """MemTotal from /proc/meminfo, in KiB."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "MemTotal":
            return int(value.split()[0])
    raise ValueError("no MemTotal line in /proc/meminfo")


def _read(path: str, default: str = "") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip('"')
    return "Linux"


@dataclass(frozen=True)
class HostFacts:
    cpus: int
    memory_kib: int
    disk_bytes: int
    kernel: str
    os_image: str
    arch: str
    machine_id: str
    boot_id: str
    # What `kubectl get nodes -o wide` shows as CONTAINER-RUNTIME.
    runtime_version: str = "local://processes"

    @classmethod
    def detect(cls, state_dir: Path) -> HostFacts:
        return cls(
            cpus=os.cpu_count() or 1,
            memory_kib=parse_meminfo(_read("/proc/meminfo")),
            disk_bytes=shutil.disk_usage(state_dir).total,
            kernel=platform.release(),
            os_image=_os_image(),
            arch=_GO_ARCH.get(platform.machine(), platform.machine()),
            machine_id=_read("/etc/machine-id", "local"),
            boot_id=_read("/proc/sys/kernel/random/boot_id", "local"),
        )

    def capacity(self) -> dict[str, str]:
        return {
            "cpu": str(self.cpus),
            "memory": f"{self.memory_kib}Ki",
            "ephemeral-storage": str(self.disk_bytes),
            "pods": str(MAX_PODS),
        }


def node_manifest(name: str, facts: HostFacts) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": facts.arch,
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": facts.arch,
            },
        },
        "spec": {},
    }


def node_status(
    name: str, facts: HostFacts, kubelet_version: str, ready_since: datetime, now: datetime
) -> dict[str, Any]:
    """The status patch: conditions (merged by type), resources, addresses and node info."""

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": format_time(now),
            "lastTransitionTime": format_time(ready_since),
        }

    return {
        "status": {
            "capacity": facts.capacity(),
            "allocatable": facts.capacity(),
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "local node"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "local node"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "local node"),
                condition("Ready", "True", "KubeletReady", "local node agent is posting status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "machineID": facts.machine_id,
                "systemUUID": facts.machine_id,
                "bootID": facts.boot_id,
                "kernelVersion": facts.kernel,
                "osImage": facts.os_image,
                "containerRuntimeVersion": facts.runtime_version,
                "kubeletVersion": kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": facts.arch,
            },
        }
    }


def untainted(taints: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The node's taints without the lifecycle ones, or None when there were none to remove."""
    kept = [t for t in taints if t.get("key") not in LIFECYCLE_TAINTS]
    return kept if len(kept) != len(taints) else None


def micro_time(moment: datetime) -> str:
    """A Lease's MicroTime: always six fraction digits (metav1.MicroTime's layout), where
    `format_time` writes whole seconds or drops a zero fraction."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_manifest(name: str, node_uid: str, now: datetime) -> dict[str, Any]:
    """The node's heartbeat Lease, owned by the Node so that it goes when the Node goes."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": "kube-node-lease",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}
            ],
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": micro_time(now),
        },
    }
