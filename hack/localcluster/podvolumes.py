"""A pod's volumes as files on the node, for containers to mount (the container runtime).

Each volume is a directory of its own under the pod's directory (volumes/<name>), except
hostPath and persistentVolumeClaim, which are host paths themselves:
  - emptyDir: an empty directory, mode 0777 as a kubelet makes it (group fsGroup if set);
  - persistentVolumeClaim: the path of the PersistentVolume the claim is bound to, which must
    be a hostPath or local volume (node-local storage, the only kind this node has); the
    claim must be Bound, as a kubelet requires, and `readOnly` mounts it read-only;
  - configMap, secret: one file per key (or per listed item), mode defaultMode;
  - projected: the files of its sources: configMap, secret, the downward API and a
    ServiceAccount token from the TokenRequest API, bound to the pod. This is how the
    standard `kube-api-access-*` volume (token, ca.crt, namespace) reaches
    /var/run/secrets/kubernetes.io/serviceaccount. Tokens are rewritten at 80% of their
    life; every file is replaced atomically (write, then rename).
A volume that cannot be made (a missing ConfigMap that is not optional) raises VolumeError,
which the node reports as it reports any sandbox failure, and retries.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from localcluster.podcontainer import Mount
from localcluster.podenv import ObjectSource, PodPlacement, field_value
from localcluster.podidentity import PodToken
from localcluster.podspec import Container, Pod, ProjectedSource, Volume

EMPTY_DIR_MODE = 0o777

RequestToken = Callable[[Pod, int, str], PodToken]


class VolumeError(Exception):
    """A volume the node cannot make; the message names the volume and what is missing."""


class ClaimSource(Protocol):
    """Reads PersistentVolumeClaims and PersistentVolumes as the API's JSON; None if absent."""

    def persistent_volume_claim(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def persistent_volume(self, name: str) -> Mapping[str, Any] | None: ...


@dataclass
class VolumeSet:
    """The host directories of a pod's volumes (and which are read-only whatever the mount
    says), and when each token must be renewed."""

    paths: dict[str, Path] = field(default_factory=dict)
    read_only: set[str] = field(default_factory=set)
    token_due: dict[tuple[str, str], datetime] = field(default_factory=dict)


def claimed_path(volume: str, namespace: str, claim: str, source: ClaimSource) -> Path:
    """The host directory of the PersistentVolume `claim` is bound to (hostPath or local)."""
    pvc = source.persistent_volume_claim(namespace, claim)
    if pvc is None:
        raise VolumeError(f'volume {volume}: persistentvolumeclaim "{claim}" not found')
    bound_to = (pvc.get("spec") or {}).get("volumeName")
    if (pvc.get("status") or {}).get("phase") != "Bound" or not bound_to:
        raise VolumeError(f'volume {volume}: persistentvolumeclaim "{claim}" is not bound')
    pv = source.persistent_volume(bound_to)
    if pv is None:
        raise VolumeError(f'volume {volume}: persistentvolume "{bound_to}" not found')
    spec = pv.get("spec") or {}
    ref = spec.get("claimRef") or {}
    if (ref.get("namespace"), ref.get("name")) != (namespace, claim):
        raise VolumeError(f'volume {volume}: persistentvolume "{bound_to}" is not bound to it')
    node_local = spec.get("hostPath") or spec.get("local")
    if not node_local:
        raise VolumeError(
            f'volume {volume}: persistentvolume "{bound_to}" is not a hostPath or local '
            "volume, the only storage the local node has"
        )
    path = Path(node_local["path"])
    if not path.is_dir():
        raise VolumeError(f'volume {volume}: {path} of persistentvolume "{bound_to}" is missing')
    return path


def write_atomic(path: Path, data: bytes, mode: int, gid: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    if gid is not None:
        os.chown(tmp, -1, gid)
    os.replace(tmp, path)


def safe_relative(path: str, volume: str) -> PurePosixPath:
    """An item's path inside its volume: relative, no `..` (the API server checks it too)."""
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise VolumeError(f"volume {volume}: item path {path!r} must be relative, without '..'")
    return rel


def _object_files(
    source: ProjectedSource, pod: Pod, objects: ObjectSource, volume: str
) -> dict[str, tuple[bytes, int | None]]:
    read = objects.config_map_data if source.kind == "configMap" else objects.secret_data
    data = read(pod.namespace, source.name)
    if data is None:
        if source.optional:
            return {}
        raise VolumeError(
            f'volume {volume}: {source.kind.lower()} "{source.name}" not found in {pod.namespace}'
        )
    if not source.items:
        return {key: (value.encode(), None) for key, value in data.items()}
    files = {}
    for item in source.items:
        if item.key not in data:
            if source.optional:
                continue
            raise VolumeError(f"volume {volume}: key {item.key} not in {source.kind} {source.name}")
        files[str(safe_relative(item.path, volume))] = (data[item.key].encode(), item.mode)
    return files


class VolumeMaker:
    """Makes and refreshes the volumes of one pod under `root` (the pod's volumes/ dir)."""

    def __init__(
        self,
        root: Path,
        objects: ObjectSource,
        claims: ClaimSource,
        request_token: RequestToken,
    ) -> None:
        self.root = root
        self.objects = objects
        self.claims = claims
        self.request_token = request_token
        self.made = VolumeSet()

    def prepare(self, pod: Pod, placement: PodPlacement, now: datetime) -> VolumeSet:
        gid = pod_fs_group(pod)
        for volume in pod.volumes:
            if volume.host_path is not None:
                self.made.paths[volume.name] = Path(volume.host_path)
                continue
            if volume.claim_name is not None:
                path = claimed_path(volume.name, pod.namespace, volume.claim_name, self.claims)
                self.made.paths[volume.name] = path
                if volume.read_only:
                    self.made.read_only.add(volume.name)
                continue
            path = self.root / volume.name
            path.mkdir(parents=True, exist_ok=True)
            if volume.empty_dir:
                os.chmod(path, EMPTY_DIR_MODE)
                if gid is not None:
                    os.chown(path, -1, gid)
            else:
                self._fill(volume, path, pod, placement, now, gid, force=True)
            self.made.paths[volume.name] = path
        return self.made

    def refresh(self, pod: Pod, placement: PodPlacement, now: datetime) -> None:
        """Renew the tokens that are due (the other files stay as they were made)."""
        gid = pod_fs_group(pod)
        for volume in pod.volumes:
            path = self.made.paths.get(volume.name)
            if path is not None and volume.sources and volume.host_path is None:
                self._fill(volume, path, pod, placement, now, gid, force=False)

    def _fill(
        self,
        volume: Volume,
        path: Path,
        pod: Pod,
        placement: PodPlacement,
        now: datetime,
        gid: int | None,
        force: bool,
    ) -> None:
        for source in volume.sources:
            files: Mapping[str, tuple[bytes, int | None]]
            if source.kind == "serviceAccountToken":
                key = (volume.name, source.path)
                due = self.made.token_due.get(key)
                if not force and due is not None and now < due:
                    continue
                token = self.request_token(pod, source.expiration_seconds, source.audience)
                self.made.token_due[key] = token.refresh_due(now)
                rel = str(safe_relative(source.path, volume.name))
                files = {rel: (token.token.encode(), None)}
            elif not force:
                continue
            elif source.kind == "downwardAPI":
                files = {
                    str(safe_relative(item.path, volume.name)): (
                        field_value(pod, item.key, placement).encode(),
                        item.mode,
                    )
                    for item in source.items
                }
            else:
                files = _object_files(source, pod, self.objects, volume.name)
            for rel, (data, mode) in files.items():
                write_atomic(path / rel, data, mode or volume.default_mode, gid)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def pod_fs_group(pod: Pod) -> int | None:
    containers = (*pod.init_containers, *pod.containers)
    return containers[0].security.fs_group if containers else None


def container_mounts(spec: Container, volumes: VolumeSet) -> list[Mount]:
    """The host path, mount path and mode of each of the container's volumeMounts."""
    mounts = []
    for mount in spec.volume_mounts:
        if mount.name not in volumes.paths:
            raise VolumeError(f"container {spec.name}: volumeMount {mount.name} has no volume")
        source = volumes.paths[mount.name]
        if mount.sub_path:
            source = source / safe_relative(mount.sub_path, mount.name)
            source.mkdir(parents=True, exist_ok=True)
        read_only = mount.read_only or mount.name in volumes.read_only
        mounts.append(Mount(source, mount.mount_path, read_only))
    return mounts
