"""A handle on the running local cluster for tests and the demo: kubectl and API clients
that always get the local kubeconfig explicitly."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config

from localcluster.paths import ClusterPaths
from localcluster.safety import require_loopback


class KubectlError(RuntimeError):
    pass


@dataclass(frozen=True)
class Cluster:
    paths: ClusterPaths
    server: str

    def __post_init__(self) -> None:
        require_loopback(self.server)

    @property
    def kubeconfig(self) -> Path:
        return self.paths.kubeconfig

    @property
    def kubectl_path(self) -> Path:
        return self.paths.kubectl

    @property
    def state_dir(self) -> Path:
        return self.paths.root

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
        if check and result.returncode != 0:
            raise KubectlError(
                f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def kubectl_json(self, *args: str) -> dict:
        return dict(json.loads(self.kubectl(*args, "-o", "json").stdout))

    def api_client(self) -> client.ApiClient:
        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        require_loopback(api.configuration.host)
        return api
