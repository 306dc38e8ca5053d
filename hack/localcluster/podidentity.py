"""A pod's identity on the local node: its ServiceAccount token, handed over as a kubeconfig.

A kubelet projects a bound token into the container's filesystem; the local node cannot
mount at /var/run/secrets, so it writes a kubeconfig of the pod's own (server and CA from the
agent's kubeconfig, the token from the TokenRequest API, bound to the Pod so that it dies
with it) and points KUBECONFIG at it. The context's namespace is the pod's, as in a cluster.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

# Long enough that clients loading the kubeconfig once outlive most runs; refreshed at 80%.
TOKEN_SECONDS = 86400
REFRESH_FRACTION = 0.8


@dataclass(frozen=True)
class ClusterEndpoint:
    """Where pods reach the API server, and the CA that signs its certificate."""

    server: str
    ca_pem: bytes


@dataclass(frozen=True)
class PodToken:
    token: str
    expires_at: datetime

    def refresh_due(self, issued_at: datetime) -> datetime:
        return issued_at + (self.expires_at - issued_at) * REFRESH_FRACTION


def should_hand_token(pod_automount: bool | None, account_automount: bool | None) -> bool:
    """ServiceAccount admission's rule: the pod's setting wins, then the account's, else yes."""
    if pod_automount is not None:
        return pod_automount
    return account_automount is not False


def pod_kubeconfig(endpoint: ClusterEndpoint, token: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": endpoint.server,
                    "certificate-authority-data": base64.b64encode(endpoint.ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": "serviceaccount", "user": {"token": token}}],
        "contexts": [
            {
                "name": "pod",
                "context": {"cluster": "local", "user": "serviceaccount", "namespace": namespace},
            }
        ],
        "current-context": "pod",
    }


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with a file only the agent's user can read (mode 0600)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_kubeconfig(path: Path, endpoint: ClusterEndpoint, token: str, namespace: str) -> None:
    write_private(path, yaml.safe_dump(pod_kubeconfig(endpoint, token, namespace)))
