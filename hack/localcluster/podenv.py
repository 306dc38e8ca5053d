"""A container's environment and command line, resolved the way a kubelet resolves them.

`envFrom` first (later sources win), then `env` in order, each value expanded with `$(VAR)`
against what is defined so far; then `command` and `args` are expanded against the result.
ConfigMaps and Secrets come from an `ObjectSource` (the agent reads them with its own admin
credentials), so the rules are unit-tested without a cluster. A required reference that
cannot be resolved raises `EnvError`, which the node reports as CreateContainerConfigError.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from kubernetes.utils.quantity import parse_quantity

from localcluster.podspec import Container, EnvVar, KeyRef, Pod, ResourceRef


class EnvError(Exception):
    """A required env source is missing; the message is what a kubelet would say."""


class CommandError(Exception):
    """A container the local node cannot start at all, whatever the retries."""


class ObjectSource(Protocol):
    """Reads the data of ConfigMaps and Secrets (Secret values already decoded); None if absent."""

    def config_map_data(self, namespace: str, name: str) -> Mapping[str, str] | None: ...

    def secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None: ...


@dataclass(frozen=True)
class PodPlacement:
    """What the node decided for a pod, visible through the downward API."""

    node_name: str
    pod_ip: str
    host_ip: str
    allocatable: Mapping[str, str]


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: unknown names stay as written, `$$` is a literal `$`."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(" and (end := text.find(")", i + 2)) != -1:
            name = text[i + 2 : end]
            out.append(env.get(name, f"$({name})"))
            i = end + 1
        else:
            out.append("$" + following)
            i += 2
    return "".join(out)


def container_env(
    pod: Pod, container: Container, placement: PodPlacement, objects: ObjectSource
) -> dict[str, str]:
    """The env a container's process gets from its pod spec (not the node's own variables)."""
    env: dict[str, str] = {}
    lookup = _CachedLookup(pod.namespace, objects)
    for source in container.env_from:
        data = lookup.data(source.kind, source.name, source.optional)
        for key, value in (data or {}).items():
            if key and "=" not in key:
                env[source.prefix + key] = value
    for var in container.env:
        resolved = _value(var, pod, container, placement, lookup, env)
        if resolved is not None:
            env[var.name] = resolved
    return env


def command_line(container: Container, env: Mapping[str, str]) -> list[str]:
    """`command` + `args` with `$(VAR)` expanded; the local node has no image entrypoint."""
    if not container.command:
        raise CommandError(
            f"container {container.name!r} has no command: the local node ignores images, "
            "so every container needs an explicit command"
        )
    return [expand(part, env) for part in (*container.command, *container.args)]


def _value(
    var: EnvVar,
    pod: Pod,
    container: Container,
    placement: PodPlacement,
    lookup: _CachedLookup,
    defined: Mapping[str, str],
) -> str | None:
    if var.field_path is not None:
        return field_value(pod, var.field_path, placement)
    if var.resource is not None:
        return resource_value(pod, container, var.resource, placement.allocatable)
    if var.config_map_key is not None:
        return lookup.key("configMap", var.config_map_key)
    if var.secret_key is not None:
        return lookup.key("secret", var.secret_key)
    return expand(var.value or "", defined)


def field_value(pod: Pod, path: str, placement: PodPlacement) -> str:
    """The downward API's `fieldRef` values a kubelet supports for env."""
    simple: dict[str, Callable[[], str]] = {
        "metadata.name": lambda: pod.name,
        "metadata.namespace": lambda: pod.namespace,
        "metadata.uid": lambda: pod.uid,
        "spec.nodeName": lambda: placement.node_name,
        "spec.serviceAccountName": lambda: pod.service_account,
        "status.podIP": lambda: placement.pod_ip,
        "status.podIPs": lambda: placement.pod_ip,
        "status.hostIP": lambda: placement.host_ip,
        "status.hostIPs": lambda: placement.host_ip,
        "metadata.labels": lambda: _format_map(pod.labels),
        "metadata.annotations": lambda: _format_map(pod.annotations),
    }
    if path in simple:
        return simple[path]()
    maps = {"metadata.labels": pod.labels, "metadata.annotations": pod.annotations}
    for prefix, values in maps.items():
        if path.startswith(f"{prefix}['") and path.endswith("']"):
            return values.get(path[len(prefix) + 2 : -2], "")
    raise EnvError(f"unsupported fieldRef fieldPath {path!r} in pod {pod.key}")


def resource_value(
    pod: Pod, container: Container, ref: ResourceRef, allocatable: Mapping[str, str]
) -> str:
    """`resourceFieldRef`: a limit (the node's allocatable when unset) or a request, divided."""
    target = container
    if ref.container:
        named = [c for c in (*pod.containers, *pod.init_containers) if c.name == ref.container]
        if not named:
            raise EnvError(f"resourceFieldRef names unknown container {ref.container!r}")
        target = named[0]
    kind, _, resource = ref.resource.partition(".")
    raw: str | None
    if kind == "limits":
        raw = target.limits.get(resource) or allocatable.get(resource, "0")
    elif kind == "requests":
        raw = target.requests.get(resource, "0")
    else:
        raise EnvError(f"unsupported resourceFieldRef resource {ref.resource!r}")
    quotient = Decimal(parse_quantity(raw)) / Decimal(parse_quantity(ref.divisor))
    return str(math.ceil(quotient))


def _format_map(values: Mapping[str, str]) -> str:
    """The downward API's `key="value"` lines, sorted by key."""
    return "\n".join(f'{key}="{values[key]}"' for key in sorted(values))


class _CachedLookup:
    """Reads each ConfigMap and Secret once per container start, and words errors as a kubelet."""

    def __init__(self, namespace: str, objects: ObjectSource) -> None:
        self.namespace = namespace
        self.objects = objects
        self.cache: dict[tuple[str, str], Mapping[str, str] | None] = {}

    def data(self, kind: str, name: str, optional: bool) -> Mapping[str, str] | None:
        if (kind, name) not in self.cache:
            read = self.objects.config_map_data if kind == "configMap" else self.objects.secret_data
            self.cache[(kind, name)] = read(self.namespace, name)
        data = self.cache[(kind, name)]
        if data is None and not optional:
            raise EnvError(f'{kind.lower()} "{name}" not found')
        return data

    def key(self, kind: str, ref: KeyRef) -> str | None:
        data = self.data(kind, ref.name, ref.optional)
        if data is None:
            return None
        if ref.key not in data:
            if ref.optional:
                return None
            label = "ConfigMap" if kind == "configMap" else "Secret"
            raise EnvError(f"couldn't find key {ref.key} in {label} {self.namespace}/{ref.name}")
        return data[ref.key]
