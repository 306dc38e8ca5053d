"""Pods in containers on the local node, for the container tests: manifests and reading them.

The pods run the project's image (`make image`), never pulled (imagePullPolicy Never), as
the restricted Pod Security Standard asks; their output is read from the node's per-pod
log file.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from typing import Any

from localcluster.client import Cluster
from localcluster.containertools import run_tool, tool_env

Json = dict[str, Any]
IMAGE = "collectjob:dev"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def container_state(container_id: str) -> str | None:
    """podman's state of a pod's container (`running`, `exited`...) from the containerID the
    node reports, or None once the container is gone (the node removes it after its exit)."""
    assert container_id.startswith("podman://"), container_id
    name = container_id.removeprefix("podman://")
    found = run_tool(
        ["podman", "inspect", "--format", "{{.State.Status}}", name], tool_env(), check=False
    )
    return found.stdout.strip() if found.returncode == 0 else None


def python_pod(name: str, script: str, restart: str = "Never", **spec: Any) -> Json:
    container = {
        "name": "main",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "command": ["python3", "-c", textwrap.dedent(script)],
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {}}, *spec.pop("volumes", [])],
            **spec,
        },
    }


class Pods:
    """Apply pods into one namespace and read their status and their log file."""

    def __init__(self, cluster: Cluster, namespace: str, wait_for: Callable[..., Any]) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.wait_for = wait_for

    def apply(self, manifest: Json) -> None:
        self.cluster.kubectl("apply", "-n", self.namespace, "-f", "-", input=json.dumps(manifest))

    def get(self, name: str) -> Json | None:
        result = self.cluster.kubectl(
            "get", "pod", name, "-n", self.namespace, "-o", "json", check=False
        )
        return json.loads(result.stdout) if result.returncode == 0 else None

    def status(self, name: str) -> Json:
        pod = self.get(name)
        assert pod is not None, f"pod {name} is gone"
        return dict(pod.get("status") or {})

    def wait_phase(self, name: str, phase: str, timeout: float = 90) -> Json:
        def reached() -> Json | None:
            status = self.status(name)
            return status if status.get("phase") == phase else None

        return dict(self.wait_for(reached, timeout=timeout, message=f"pod {name} {phase}"))

    def log(self, name: str) -> str:
        path = self.cluster.state_dir / "node" / "logs" / f"{self.namespace}_{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, name: str, text: str, timeout: float = 60) -> str:
        return str(
            self.wait_for(
                lambda: text in self.log(name) and self.log(name),
                timeout=timeout,
                message=f"{text!r} in the log of pod {name}",
            )
        )
