"""A container's env and command line are resolved as a kubelet resolves them."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

from localcluster.podenv import (
    CommandError,
    EnvError,
    PodPlacement,
    command_line,
    container_env,
    expand,
)
from localcluster.podspec import Pod

PLACEMENT = PodPlacement(
    node_name="local-node",
    pod_ip="127.1.2.3",
    host_ip="127.0.0.1",
    allocatable={"cpu": "2", "memory": "2Gi"},
)


class FakeObjects:
    """ConfigMaps and Secrets by name, counting reads."""

    def __init__(self, config_maps=None, secrets=None) -> None:
        self.config_maps: dict[str, dict[str, str]] = config_maps or {}
        self.secrets: dict[str, dict[str, str]] = secrets or {}
        self.reads: list[tuple[str, str, str]] = []

    def config_map_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        self.reads.append(("configMap", namespace, name))
        return self.config_maps.get(name)

    def secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        self.reads.append(("secret", namespace, name))
        return self.secrets.get(name)


def env_of(pod: Pod, objects: FakeObjects | None = None) -> dict[str, str]:
    return container_env(pod, pod.containers[0], PLACEMENT, objects or FakeObjects())


def container(**fields) -> dict:
    return {"name": "main", "image": "ignored", "command": ["python"], **fields}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "alpha"),
        ("x-$(A)-$(B)-y", "x-alpha-beta-y"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("$$", "$"),
        ("cost: 5$", "cost: 5$"),
        ("$A", "$A"),
        ("$(A", "$(A"),
        ("$()", "$()"),
    ],
)
def test_expansion_follows_kubernetes_rules(text: str, expected: str) -> None:
    assert expand(text, {"A": "alpha", "B": "beta"}) == expected


def test_field_refs_expose_the_pod_through_the_downward_api(make_pod: Callable[..., Pod]) -> None:
    paths = {
        "NAME": "metadata.name",
        "NAMESPACE": "metadata.namespace",
        "UID": "metadata.uid",
        "NODE": "spec.nodeName",
        "ACCOUNT": "spec.serviceAccountName",
        "POD_IP": "status.podIP",
        "HOST_IP": "status.hostIP",
        "APP": "metadata.labels['app']",
        "OWNER": "metadata.annotations['owner']",
        "NO_LABEL": "metadata.labels['absent']",
        "LABELS": "metadata.labels",
    }
    env = [{"name": k, "valueFrom": {"fieldRef": {"fieldPath": v}}} for k, v in paths.items()]
    pod = make_pod([container(env=env)])

    assert env_of(pod) == {
        "NAME": "web-1",
        "NAMESPACE": "shop",
        "UID": "0b6c3c1e-0000-4000-8000-000000000001",
        "NODE": "local-node",
        "ACCOUNT": "web",
        "POD_IP": "127.1.2.3",
        "HOST_IP": "127.0.0.1",
        "APP": "web",
        "OWNER": "team-a",
        "NO_LABEL": "",
        "LABELS": 'app="web"\ntier="front"',
    }


def test_unsupported_field_path_is_a_config_error(make_pod: Callable[..., Pod]) -> None:
    env = [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.priority"}}}]
    with pytest.raises(EnvError, match=r"spec\.priority"):
        env_of(make_pod([container(env=env)]))


def test_values_expand_only_variables_defined_before_them(make_pod: Callable[..., Pod]) -> None:
    env = [
        {"name": "FIRST", "value": "one"},
        {"name": "BOTH", "value": "$(FIRST)+$(LATER)"},
        {"name": "LATER", "value": "two"},
    ]
    assert env_of(make_pod([container(env=env)]))["BOTH"] == "one+$(LATER)"


def test_env_from_is_overridden_by_env_and_later_sources(make_pod: Callable[..., Pod]) -> None:
    objects = FakeObjects(
        config_maps={"base": {"MODE": "base", "LEVEL": "1", "bad=key": "x"}},
        secrets={"creds": {"MODE": "secret", "TOKEN": "s3cr3t"}},
    )
    pod = make_pod(
        [
            container(
                envFrom=[
                    {"configMapRef": {"name": "base"}},
                    {"secretRef": {"name": "creds"}, "prefix": "S_"},
                    {"secretRef": {"name": "creds"}},
                ],
                env=[{"name": "LEVEL", "value": "2"}],
            )
        ]
    )
    assert env_of(pod, objects) == {
        "MODE": "secret",
        "LEVEL": "2",
        "S_MODE": "secret",
        "S_TOKEN": "s3cr3t",
        "TOKEN": "s3cr3t",
    }
    assert objects.reads.count(("secret", "shop", "creds")) == 1


def test_key_refs_read_config_maps_and_secrets(make_pod: Callable[..., Pod]) -> None:
    objects = FakeObjects(config_maps={"cfg": {"url": "http://x"}}, secrets={"db": {"pw": "p"}})
    env = [
        {"name": "URL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "url"}}},
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
    ]
    assert env_of(make_pod([container(env=env)]), objects) == {"URL": "http://x", "PW": "p"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"configMapKeyRef": {"name": "nope", "key": "k"}}, 'configmap "nope" not found'),
        ({"secretKeyRef": {"name": "nope", "key": "k"}}, 'secret "nope" not found'),
        (
            {"configMapKeyRef": {"name": "cfg", "key": "missing"}},
            "couldn't find key missing in ConfigMap shop/cfg",
        ),
    ],
)
def test_missing_required_refs_are_config_errors(
    make_pod: Callable[..., Pod], source: dict, message: str
) -> None:
    objects = FakeObjects(config_maps={"cfg": {"url": "http://x"}})
    pod = make_pod([container(env=[{"name": "X", "valueFrom": source}])])
    with pytest.raises(EnvError, match=message):
        env_of(pod, objects)


def test_missing_optional_refs_are_left_out(make_pod: Callable[..., Pod]) -> None:
    objects = FakeObjects(config_maps={"cfg": {"url": "http://x"}})
    optional_key = {"name": "cfg", "key": "missing", "optional": True}
    optional_map = {"name": "nope", "key": "k", "optional": True}
    pod = make_pod(
        [
            container(
                envFrom=[{"secretRef": {"name": "nope", "optional": True}}],
                env=[
                    {"name": "A", "valueFrom": {"configMapKeyRef": optional_key}},
                    {"name": "B", "valueFrom": {"configMapKeyRef": optional_map}},
                    {"name": "C", "value": "kept"},
                ],
            )
        ]
    )
    assert env_of(pod, objects) == {"C": "kept"}


def test_resource_field_refs_use_limits_requests_and_node_allocatable(
    make_pod: Callable[..., Pod],
) -> None:
    def ref(resource: str, divisor: str | None = None) -> dict:
        field = {"resource": resource, **({"divisor": divisor} if divisor else {})}
        return {"resourceFieldRef": field}

    env = [
        {"name": "MEM_MI", "valueFrom": ref("limits.memory", "1Mi")},
        {"name": "CPU_LIMIT", "valueFrom": ref("limits.cpu")},
        {"name": "CPU_REQ_M", "valueFrom": ref("requests.cpu", "1m")},
        {"name": "REQ_CPU_CORES", "valueFrom": ref("requests.cpu")},
    ]
    resources = {"limits": {"memory": "300Mi"}, "requests": {"cpu": "250m"}}
    pod = make_pod([container(env=env, resources=resources)])
    assert env_of(pod) == {
        "MEM_MI": "300",
        "CPU_LIMIT": "2",
        "CPU_REQ_M": "250",
        "REQ_CPU_CORES": "1",
    }


def test_command_and_args_expand_the_container_env(make_pod: Callable[..., Pod]) -> None:
    pod = make_pod(
        [container(command=["python", "-m", "$(MODULE)"], args=["--name=$(NAME)", "$$(NAME)"])]
    )
    argv = command_line(pod.containers[0], {"MODULE": "http.server", "NAME": "web"})
    assert argv == ["python", "-m", "http.server", "--name=web", "$(NAME)"]


def test_a_container_without_command_cannot_run_locally(make_pod: Callable[..., Pod]) -> None:
    pod = make_pod([{"name": "main", "image": "busybox", "args": ["sleep", "1"]}])
    with pytest.raises(CommandError, match="needs an explicit command"):
        command_line(pod.containers[0], {})
