"""The Node and its Lease: what the scheduler and the node lifecycle controller look at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from localcluster.nodeobject import (
    HostFacts,
    lease_manifest,
    node_manifest,
    node_status,
    parse_meminfo,
    untainted,
)

FACTS = HostFacts(
    cpus=4,
    memory_kib=8000000,
    disk_bytes=10**11,
    kernel="6.1.0",
    os_image="Debian GNU/Linux 12 (bookworm)",
    arch="amd64",
    machine_id="m1",
    boot_id="b1",
)
SINCE = datetime(2026, 1, 1, tzinfo=UTC)
NOW = SINCE + timedelta(minutes=5)


def test_meminfo_total_is_read_in_kib() -> None:
    text = "MemFree:  100 kB\nMemTotal:       24684084 kB\nBuffers: 1 kB\n"
    assert parse_meminfo(text) == 24684084


def test_host_facts_describe_this_machine(tmp_path: Path) -> None:
    facts = HostFacts.detect(tmp_path)
    assert facts.cpus >= 1 and facts.memory_kib > 0 and facts.disk_bytes > 0
    assert facts.capacity()["memory"] == f"{facts.memory_kib}Ki"
    assert facts.capacity()["pods"] == "110"


def test_the_node_is_labelled_as_a_linux_host() -> None:
    labels = node_manifest("local-node", FACTS)["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == "local-node"
    assert labels["kubernetes.io/os"] == "linux"
    assert labels["kubernetes.io/arch"] == "amd64"


def test_node_status_is_ready_with_a_fresh_heartbeat() -> None:
    status = node_status("local-node", FACTS, "v1.36.3", SINCE, NOW)["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Ready"]["lastHeartbeatTime"] == "2026-01-01T00:05:00Z"
    assert conditions["Ready"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    pressures = ("MemoryPressure", "DiskPressure", "PIDPressure")
    assert [conditions[k]["status"] for k in pressures] == ["False"] * 3
    assert status["capacity"] == status["allocatable"] == FACTS.capacity()
    assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]
    assert status["nodeInfo"]["kubeletVersion"] == "v1.36.3"
    assert status["nodeInfo"]["operatingSystem"] == "linux"


def test_only_the_lifecycle_taints_are_removed() -> None:
    mine = {"key": "dedicated", "value": "x", "effect": "NoSchedule"}
    taints = [
        {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
        mine,
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
    ]
    assert untainted(taints) == [mine]
    assert untainted([mine]) is None


def test_the_lease_is_owned_by_the_node_and_renewed_in_microseconds() -> None:
    lease = lease_manifest("local-node", "uid-1", NOW.replace(microsecond=1234))
    assert lease["metadata"]["namespace"] == "kube-node-lease"
    assert lease["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert lease["spec"]["renewTime"] == "2026-01-01T00:05:00.001234Z"
    assert lease["spec"]["holderIdentity"] == "local-node"
