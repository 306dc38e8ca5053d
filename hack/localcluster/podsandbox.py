"""What a pod's containers share on the local node: a directory, an address, volumes, identity.

This stands in for a kubelet's pod sandbox. The pod's directory
(<state-dir>/pods/<namespace>_<name>_<uid>) holds its volumes (volumes/<name>) and, in
process mode, its pidfiles and the kubeconfig with its ServiceAccount token.

Each pod runs with one of two runtimes, chosen when its sandbox is made: the label
`local-node.collect.dev/runtime` (`container` or `process`) of its namespace, else the
node's default (--runtime).
  - container: podman + runc from the pod's image (podcontainer.py); volumes are made as
    files (podvolumes.py) and mounted, the ServiceAccount token is the projected volume at
    /var/run/secrets/kubernetes.io/serviceaccount, and KUBERNETES_SERVICE_HOST/PORT point at
    the API server on loopback, as in any cluster.
  - process (the fallback): the container's command runs as a local process from the
    project's venv; the pod's directory is its HOME and working directory, emptyDir volumes
    are directories not mounted anywhere, hostPath volumes are used at their own paths (a
    mountPath elsewhere is reported as a Warning) and the token comes in a kubeconfig
    (KUBECONFIG) instead of the projected volume.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

from localcluster.nodeapi import NodeApi, describe
from localcluster.nodeobject import HOST_IP
from localcluster.podaddress import AddressPool
from localcluster.podcontainer import PodmanRuntime
from localcluster.podenv import PodPlacement
from localcluster.podidentity import (
    TOKEN_SECONDS,
    ClusterEndpoint,
    should_hand_token,
    write_kubeconfig,
)
from localcluster.podspec import Pod
from localcluster.podvolumes import VolumeMaker, VolumeSet

log = logging.getLogger(__name__)

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
TOKEN_RETRY = timedelta(seconds=30)
RUNTIME_LABEL = "local-node.collect.dev/runtime"
RUNTIMES = ("container", "process")


@dataclass(frozen=True)
class NodeContext:
    """What every pod shares: the node's name, its directories and its API endpoint."""

    node_name: str
    state_dir: Path
    bin_dir: Path
    endpoint: ClusterEndpoint
    allocatable: Mapping[str, str]
    shutdown_grace: float
    runtime: str = "process"
    podman: PodmanRuntime | None = None

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "pods"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"


def pod_dir_name(namespace: str, name: str, uid: str) -> str:
    return f"{namespace}_{name}_{uid}"


def remove_stale_dirs(pods_dir: Path, live_uids: Collection[str]) -> list[Path]:
    """Remove the directories of pods that no longer exist (deleted while no agent ran).

    Namespaces and pod names have no "_", so a directory's uid is what follows the last one.
    """
    stale = [
        path
        for path in (pods_dir.iterdir() if pods_dir.is_dir() else ())
        if path.name.rsplit("_", 1)[-1] not in live_uids
    ]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


class PodSandbox:
    def __init__(
        self,
        pod: Pod,
        context: NodeContext,
        api: NodeApi,
        addresses: AddressPool,
        warn: Callable[[str, str], None],
    ) -> None:
        self.context = context
        self.api = api
        self.addresses = addresses
        self.warn = warn
        self.uid = pod.uid
        self.dir = context.pods_dir / pod_dir_name(pod.namespace, pod.name, pod.uid)
        self.log_path = context.logs_dir / f"{pod.namespace}_{pod.name}.log"
        self.pod_ip: str | None = None
        self.kubeconfig: Path | None = None
        self.hand_token: bool | None = None
        self.token_refresh_at: datetime | None = None
        self.runtime: str | None = None
        self.volumes = VolumeMaker(self.dir / "volumes", api, api, api.request_token)
        self.mounts = VolumeSet()

    def prepare(self, pod: Pod) -> None:
        """Directory, address, volumes and identity; raises what prevents the pod from running."""
        self.runtime = self._choose_runtime(pod)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.context.logs_dir.mkdir(parents=True, exist_ok=True)
        self.pod_ip = self.addresses.claim(pod.uid, pod.pod_ip)
        self._check_host_paths(pod)
        if self.runtime == "container":
            self.mounts = self.volumes.prepare(pod, self.placement(), datetime.now(UTC))
        else:
            self._warn_unmounted(pod)
            self.refresh_token(pod, force=True)

    def _choose_runtime(self, pod: Pod) -> str:
        if self.runtime is not None:
            return self.runtime
        wanted = self.api.namespace_labels(pod.namespace).get(RUNTIME_LABEL, self.context.runtime)
        if wanted not in RUNTIMES:
            raise ValueError(
                f"namespace {pod.namespace}: label {RUNTIME_LABEL}={wanted!r} names no runtime "
                f"of the local node ({', '.join(RUNTIMES)})"
            )
        if wanted == "container" and self.context.podman is None:
            raise RuntimeError(
                "the container runtime is unavailable: podman is not installed "
                "(`make image` installs it)"
            )
        return wanted

    @property
    def podman(self) -> PodmanRuntime:
        if self.context.podman is None:
            raise RuntimeError("the container runtime is unavailable")
        return self.context.podman

    def release(self) -> None:
        """Give the pod's address back; its directory stays for the next agent to reuse."""
        self.addresses.release(self.uid)

    def remove(self) -> None:
        """The pod is deleted: its directory (and the token in it) goes too."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.release()

    def placement(self) -> PodPlacement:
        return PodPlacement(
            self.context.node_name, self.pod_ip or HOST_IP, HOST_IP, self.context.allocatable
        )

    def node_env(self, pod: Pod) -> dict[str, str]:
        """What the node adds to a container's env; the pod's own variables override it."""
        if self.runtime == "container":
            # As a kubelet does for the `kubernetes` Service; here the API server's own address.
            url = urlparse(self.context.endpoint.server)
            port = str(url.port or 443)
            return {
                "KUBERNETES_SERVICE_HOST": url.hostname or HOST_IP,
                "KUBERNETES_SERVICE_PORT": port,
                "KUBERNETES_SERVICE_PORT_HTTPS": port,
            }
        env = {
            "PATH": f"{self.context.bin_dir}:{SYSTEM_PATH}",
            "HOME": str(self.dir),
            "HOSTNAME": pod.name,
            "KUBERNETES_NODE_NAME": self.context.node_name,
        }
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def refresh_token(self, pod: Pod, force: bool = False) -> None:
        """Renew the pod's ServiceAccount tokens when due: the projected volumes' files in a
        container, the kubeconfig of a process."""
        if self.runtime == "container":
            self.volumes.refresh(pod, self.placement(), datetime.now(UTC))
            return
        if self.hand_token is None:
            account = None
            if pod.automount_token is None:
                account = self.api.account_automount(pod.namespace, pod.service_account)
            self.hand_token = should_hand_token(pod.automount_token, account)
        now = datetime.now(UTC)
        due = self.token_refresh_at
        if not self.hand_token or (not force and due is not None and now < due):
            return
        try:
            token = self.api.request_token(pod, TOKEN_SECONDS)
        except Exception as e:
            if force:
                raise
            log.warning("pod %s: token renewal failed (%s), retrying", pod.key, describe(e))
            self.token_refresh_at = now + TOKEN_RETRY
            return
        path = self.dir / "kubeconfig"
        write_kubeconfig(path, self.context.endpoint, token.token, pod.namespace)
        self.kubeconfig = path
        self.token_refresh_at = token.refresh_due(now)

    def _check_host_paths(self, pod: Pod) -> None:
        for volume in pod.volumes:
            if volume.empty_dir:
                (self.dir / "volumes" / volume.name).mkdir(parents=True, exist_ok=True)
            if volume.host_path is None:
                continue
            path, kind = Path(volume.host_path), volume.host_path_type
            if kind == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            elif kind == "FileOrCreate" and not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            elif kind == "Directory" and not path.is_dir():
                raise FileNotFoundError(f"hostPath volume {volume.name}: {path} is not a directory")
            elif kind == "File" and not path.is_file():
                raise FileNotFoundError(f"hostPath volume {volume.name}: {path} is not a file")

    def _warn_unmounted(self, pod: Pod) -> None:
        host_paths = {v.name: v.host_path for v in pod.volumes if v.host_path is not None}
        for container in (*pod.init_containers, *pod.containers):
            for mount in container.volume_mounts:
                host_path = host_paths.get(mount.name)
                if host_path is not None and mount.mount_path.rstrip("/") != host_path.rstrip("/"):
                    self.warn(
                        "VolumeMountIgnored",
                        f"container {container.name}: hostPath volume {mount.name} is "
                        f"{host_path} but its mountPath is {mount.mount_path}; the local node "
                        f"mounts nothing, so the process must use {host_path}",
                    )
