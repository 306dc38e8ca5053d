"""Where the local cluster keeps its state: one git-ignored folder, `.cluster/`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_NAME = "local-node"
# What outlives `make cluster-down`: binaries, the base root filesystem, wheels, images
# (the same rule as hack/build-binaries.sh).
CACHE_DIR = Path(
    os.environ.get("COLLECTJOB_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "collectjob"
)


@dataclass(frozen=True)
class ClusterPaths:
    root: Path

    @classmethod
    def default(cls) -> ClusterPaths:
        return cls(REPO_ROOT / ".cluster")

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def kubectl(self) -> Path:
        return self.root / "bin" / "kubectl"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def run(self) -> Path:
        """Pid files and the state file with the ports in use."""
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def node_state(self) -> Path:
        return self.root / "node"

    @property
    def images(self) -> Path:
        """The OCI archive of the project's image, for `kind load image-archive` or a push."""
        return self.root / "images"

    @property
    def state_file(self) -> Path:
        return self.run / "state.json"
