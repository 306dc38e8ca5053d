"""A pod's JSON is parsed once into what the local node acts on, with the API's defaults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from localcluster.podspec import EnvFromSource, EnvVar, KeyRef, Pod, Volume
from localcluster.podstatus import Running


def test_defaults_of_a_minimal_pod(pod_manifest: Callable[..., dict[str, Any]]) -> None:
    raw = pod_manifest()
    del raw["spec"]["serviceAccountName"]
    pod = Pod.parse(raw)
    assert pod.service_account == "default"
    assert pod.restart_policy == "Always"
    assert pod.grace_seconds == 30
    assert pod.automount_token is None
    assert (pod.phase, pod.terminal, pod.deletion_requested) == ("Pending", False, False)
    assert pod.key == "shop/web-1 (0b6c3c1e-0000-4000-8000-000000000001)"


def test_containers_env_and_volumes(pod_manifest: Callable[..., dict[str, Any]]) -> None:
    container = {
        "name": "main",
        "image": "ignored",
        "command": ["python"],
        "args": ["-m", "app"],
        "workingDir": "/srv",
        "env": [
            {"name": "A", "value": "1"},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ],
        "envFrom": [{"configMapRef": {"name": "cm", "optional": True}, "prefix": "P_"}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    volumes = [
        {"name": "data", "hostPath": {"path": "/data", "type": "DirectoryOrCreate"}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "token", "projected": {"sources": []}},
    ]
    pod = Pod.parse(pod_manifest([container], volumes=volumes))
    parsed = pod.containers[0]
    assert parsed.command == ("python",) and parsed.args == ("-m", "app")
    assert parsed.working_dir == "/srv"
    assert parsed.env == (
        EnvVar("A", value="1"),
        EnvVar("B", secret_key=KeyRef("s", "k", optional=False)),
    )
    assert parsed.env_from == (EnvFromSource("configMap", "cm", "P_", optional=True),)
    assert pod.volumes == (
        Volume("data", host_path="/data", host_path_type="DirectoryOrCreate"),
        Volume("scratch", empty_dir=True),
        Volume("token"),
    )


def test_a_deletion_in_progress_sets_the_grace_period(
    pod_manifest: Callable[..., dict[str, Any]],
) -> None:
    raw = pod_manifest(terminationGracePeriodSeconds=45)
    assert Pod.parse(raw).grace_seconds == 45
    raw["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    raw["metadata"]["deletionGracePeriodSeconds"] = 5
    pod = Pod.parse(raw)
    assert pod.deletion_requested and pod.grace_seconds == 5


def test_reported_status_is_kept(pod_manifest: Callable[..., dict[str, Any]]) -> None:
    raw = pod_manifest()
    raw["status"] = {
        "phase": "Running",
        "podIP": "127.1.0.5",
        "startTime": "2026-01-01T00:00:00Z",
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:01Z"}
        ],
        "containerStatuses": [
            {
                "name": "main",
                "image": "ignored",
                "restartCount": 2,
                "state": {"running": {"startedAt": "2026-01-01T00:00:02Z"}},
            }
        ],
    }
    pod = Pod.parse(raw)
    assert pod.pod_ip == "127.1.0.5"
    assert pod.condition_times["Ready"][0] == "True"
    assert pod.statuses[0].restart_count == 2
    assert isinstance(pod.statuses[0].state, Running)
