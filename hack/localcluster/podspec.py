"""The parts of a Pod the local node acts on, parsed once from the API's JSON.

The node agent reads pods as plain JSON (camelCase keys, as the API server sends them) and
turns each into a `Pod` here; everything downstream works on these frozen dataclasses.
Only what the local node can honour is kept: probes, ports and lifecycle hooks are dropped
on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from collectjob_api.rfc3339 import parse_time
from localcluster.podstatus import ContainerStatus

Json = Mapping[str, Any]


@dataclass(frozen=True)
class KeyRef:
    """`configMapKeyRef` / `secretKeyRef`: one key of a named object."""

    name: str
    key: str
    optional: bool


@dataclass(frozen=True)
class ResourceRef:
    """`resourceFieldRef`: e.g. `limits.memory` of a container, divided by `divisor`."""

    container: str | None
    resource: str
    divisor: str


@dataclass(frozen=True)
class EnvVar:
    """One `env` entry: a literal value or exactly one `valueFrom` source."""

    name: str
    value: str | None = None
    field_path: str | None = None
    resource: ResourceRef | None = None
    config_map_key: KeyRef | None = None
    secret_key: KeyRef | None = None

    @classmethod
    def parse(cls, raw: Json) -> EnvVar:
        source = raw.get("valueFrom") or {}
        field = source.get("fieldRef")
        res = source.get("resourceFieldRef")
        return cls(
            name=raw["name"],
            value=raw.get("value"),
            field_path=field["fieldPath"] if field else None,
            resource=(
                ResourceRef(res.get("containerName"), res["resource"], str(res.get("divisor", "1")))
                if res
                else None
            ),
            config_map_key=_key_ref(source.get("configMapKeyRef")),
            secret_key=_key_ref(source.get("secretKeyRef")),
        )


def _key_ref(raw: Json | None) -> KeyRef | None:
    if not raw:
        return None
    return KeyRef(raw.get("name", ""), raw["key"], bool(raw.get("optional", False)))


@dataclass(frozen=True)
class EnvFromSource:
    """One `envFrom` entry: every key of a ConfigMap or Secret, with an optional prefix."""

    kind: Literal["configMap", "secret"]
    name: str
    prefix: str
    optional: bool

    @classmethod
    def parse(cls, raw: Json) -> EnvFromSource:
        kind: Literal["configMap", "secret"] = "configMap" if "configMapRef" in raw else "secret"
        ref = raw.get(f"{kind}Ref") or {}
        return cls(kind, ref.get("name", ""), raw.get("prefix", ""), bool(ref.get("optional")))


@dataclass(frozen=True)
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool = False
    sub_path: str = ""


@dataclass(frozen=True)
class SecurityContext:
    """A container's effective securityContext: its own fields over the pod's."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool = False
    read_only_root: bool = False
    allow_privilege_escalation: bool = True
    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    seccomp: str = "Unconfined"
    supplemental_groups: tuple[int, ...] = ()
    fs_group: int | None = None

    @classmethod
    def parse(cls, pod: Json, container: Json) -> SecurityContext:
        def pick(key: str) -> Any:
            return container.get(key, pod.get(key))

        caps = container.get("capabilities") or {}
        seccomp = pick("seccompProfile") or {}
        return cls(
            run_as_user=pick("runAsUser"),
            run_as_group=pick("runAsGroup"),
            run_as_non_root=bool(pick("runAsNonRoot")),
            read_only_root=bool(container.get("readOnlyRootFilesystem")),
            allow_privilege_escalation=container.get("allowPrivilegeEscalation", True) is not False,
            privileged=bool(container.get("privileged")),
            cap_add=tuple(caps.get("add") or ()),
            cap_drop=tuple(caps.get("drop") or ()),
            seccomp=seccomp.get("type", "Unconfined"),
            supplemental_groups=tuple(pod.get("supplementalGroups") or ()),
            fs_group=pod.get("fsGroup"),
        )


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[EnvVar, ...]
    env_from: tuple[EnvFromSource, ...]
    working_dir: str | None
    volume_mounts: tuple[VolumeMount, ...]
    limits: Mapping[str, str]
    requests: Mapping[str, str]
    security: SecurityContext = SecurityContext()
    pull_policy: str = "IfNotPresent"

    @classmethod
    def parse(cls, raw: Json, pod_security: Json | None = None) -> Container:
        resources = raw.get("resources") or {}
        return cls(
            name=raw["name"],
            image=raw.get("image", ""),
            command=tuple(raw.get("command") or ()),
            args=tuple(raw.get("args") or ()),
            env=tuple(EnvVar.parse(e) for e in raw.get("env") or ()),
            env_from=tuple(EnvFromSource.parse(e) for e in raw.get("envFrom") or ()),
            working_dir=raw.get("workingDir") or None,
            volume_mounts=tuple(
                VolumeMount(
                    m["name"], m["mountPath"], bool(m.get("readOnly")), m.get("subPath", "")
                )
                for m in raw.get("volumeMounts") or ()
            ),
            limits=dict(resources.get("limits") or {}),
            requests=dict(resources.get("requests") or {}),
            security=SecurityContext.parse(pod_security or {}, raw.get("securityContext") or {}),
            pull_policy=raw.get("imagePullPolicy", "IfNotPresent"),
        )


@dataclass(frozen=True)
class KeyToPath:
    key: str
    path: str
    mode: int | None = None


@dataclass(frozen=True)
class ProjectedSource:
    """One source of a projected (or configMap/secret) volume: the files it contributes.

    kind is "configMap", "secret", "serviceAccountToken" or "downwardAPI"; for a token
    `path` is its file, for the downward API `items` map field paths to files.
    """

    kind: str
    name: str = ""
    items: tuple[KeyToPath, ...] = ()
    optional: bool = False
    path: str = ""
    audience: str = ""
    expiration_seconds: int = 3600


@dataclass(frozen=True)
class Volume:
    """A pod volume as the local node sees it: a host path, an emptyDir, a
    PersistentVolumeClaim, files made from ConfigMaps, Secrets, the downward API and
    ServiceAccount tokens, or something ignored."""

    name: str
    host_path: str | None = None
    host_path_type: str = ""
    empty_dir: bool = False
    sources: tuple[ProjectedSource, ...] = ()
    default_mode: int = 0o644
    claim_name: str | None = None
    read_only: bool = False

    @classmethod
    def parse(cls, raw: Json) -> Volume:
        host = raw.get("hostPath")
        claim = raw.get("persistentVolumeClaim")
        sources: tuple[ProjectedSource, ...] = ()
        mode = 0o644
        for kind, name_key in (("configMap", "name"), ("secret", "secretName")):
            if kind in raw:
                body = raw[kind] or {}
                mode = int(body.get("defaultMode", mode))
                sources = (_source(kind, body, body.get(name_key, "")),)
        if "projected" in raw:
            body = raw["projected"] or {}
            mode = int(body.get("defaultMode", mode))
            sources = tuple(
                _projected(kind, part)
                for part in body.get("sources") or ()
                for kind in part
                if kind in ("configMap", "secret", "serviceAccountToken", "downwardAPI")
            )
        return cls(
            name=raw["name"],
            host_path=host["path"] if host else None,
            host_path_type=(host or {}).get("type", ""),
            empty_dir="emptyDir" in raw,
            sources=sources,
            default_mode=mode,
            claim_name=claim["claimName"] if claim else None,
            read_only=bool((claim or {}).get("readOnly")),
        )


def _items(raw: Sequence[Json] | None, key: str = "key") -> tuple[KeyToPath, ...]:
    return tuple(KeyToPath(i[key], i["path"], i.get("mode")) for i in raw or ())


def _source(kind: str, body: Json, name: str) -> ProjectedSource:
    return ProjectedSource(kind, name, _items(body.get("items")), bool(body.get("optional")))


def _projected(kind: str, part: Json) -> ProjectedSource:
    body = part[kind] or {}
    if kind == "serviceAccountToken":
        return ProjectedSource(
            kind,
            path=body["path"],
            audience=body.get("audience", ""),
            expiration_seconds=int(body.get("expirationSeconds", 3600)),
        )
    if kind == "downwardAPI":
        fields = tuple(
            KeyToPath(i["fieldRef"]["fieldPath"], i["path"], i.get("mode"))
            for i in body.get("items") or ()
            if i.get("fieldRef")
        )
        return ProjectedSource(kind, items=fields)
    return _source(kind, body, body.get("name", ""))


@dataclass(frozen=True)
class Pod:
    uid: str
    name: str
    namespace: str
    node_name: str
    service_account: str
    automount_token: bool | None
    restart_policy: str
    init_containers: tuple[Container, ...]
    containers: tuple[Container, ...]
    volumes: tuple[Volume, ...]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    termination_grace_seconds: int
    deletion_requested: bool
    deletion_grace_seconds: int | None
    phase: str
    pod_ip: str | None
    start_time: datetime | None
    init_statuses: tuple[ContainerStatus, ...]
    statuses: tuple[ContainerStatus, ...]
    condition_times: Mapping[str, tuple[str, datetime | None]]

    @classmethod
    def parse(cls, raw: Json) -> Pod:
        meta, spec, status = raw["metadata"], raw.get("spec") or {}, raw.get("status") or {}
        return cls(
            uid=meta["uid"],
            name=meta["name"],
            namespace=meta.get("namespace", "default"),
            node_name=spec.get("nodeName", ""),
            service_account=spec.get("serviceAccountName") or "default",
            automount_token=spec.get("automountServiceAccountToken"),
            restart_policy=spec.get("restartPolicy", "Always"),
            init_containers=tuple(
                Container.parse(c, spec.get("securityContext"))
                for c in spec.get("initContainers") or ()
            ),
            containers=tuple(
                Container.parse(c, spec.get("securityContext"))
                for c in spec.get("containers") or ()
            ),
            volumes=tuple(Volume.parse(v) for v in spec.get("volumes") or ()),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            termination_grace_seconds=int(spec.get("terminationGracePeriodSeconds", 30)),
            deletion_requested=bool(meta.get("deletionTimestamp")),
            deletion_grace_seconds=meta.get("deletionGracePeriodSeconds"),
            phase=status.get("phase", "Pending"),
            pod_ip=status.get("podIP"),
            start_time=parse_time(status.get("startTime")),
            init_statuses=_statuses(status.get("initContainerStatuses")),
            statuses=_statuses(status.get("containerStatuses")),
            condition_times={
                c["type"]: (c["status"], parse_time(c.get("lastTransitionTime")))
                for c in status.get("conditions") or ()
            },
        )

    @property
    def key(self) -> str:
        """How logs and directories name the pod: `namespace/name (uid)`."""
        return f"{self.namespace}/{self.name} ({self.uid})"

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def grace_seconds(self) -> int:
        """The grace period of the deletion in progress, else the pod's own."""
        if self.deletion_grace_seconds is not None:
            return int(self.deletion_grace_seconds)
        return self.termination_grace_seconds


def _statuses(raw: Sequence[Json] | None) -> tuple[ContainerStatus, ...]:
    return tuple(ContainerStatus.parse(s) for s in raw or ())
