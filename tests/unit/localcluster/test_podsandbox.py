"""A pod's sandbox: its directory, address, volumes, identity and the env the node adds."""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from localcluster.nodeapi import NodeApi
from localcluster.podaddress import AddressPool
from localcluster.podcontainer import PodmanRuntime
from localcluster.podidentity import ClusterEndpoint, PodToken
from localcluster.podsandbox import RUNTIME_LABEL, NodeContext, PodSandbox, remove_stale_dirs
from localcluster.podspec import Pod
from localcluster.podvolumes import VolumeError, container_mounts, safe_relative

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class FakeApi:
    """The calls a sandbox makes: the namespace's labels, the account's automount flag, a
    TokenRequest, and the ConfigMaps, Secrets, claims and PersistentVolumes its volumes read."""

    def __init__(
        self,
        account_automount: bool | None = None,
        labels: dict[str, str] | None = None,
        objects: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.automount = account_automount
        self.labels = labels or {}
        self.objects = objects or {}
        self.tokens: list[str] = []
        self.audiences: list[str] = []

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        return self.labels

    def account_automount(self, namespace: str, name: str) -> bool | None:
        return self.automount

    def request_token(self, pod: Pod, seconds: int, audience: str = "") -> PodToken:
        self.tokens.append(f"token-{len(self.tokens) + 1}")
        self.audiences.append(audience)
        return PodToken(self.tokens[-1], datetime.now(UTC) + timedelta(seconds=seconds))

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.objects.get(f"configmap/{name}")

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.objects.get(f"secret/{name}")

    def persistent_volume_claim(self, namespace: str, name: str) -> Any:
        return self.objects.get(f"pvc/{name}")

    def persistent_volume(self, name: str) -> Any:
        return self.objects.get(f"pv/{name}")


@pytest.fixture
def context(tmp_path: Path) -> NodeContext:
    return NodeContext(
        node_name="local-node",
        state_dir=tmp_path / "state",
        bin_dir=Path("/venv/bin"),
        endpoint=ClusterEndpoint("https://127.0.0.1:6443", b"ca"),
        allocatable={"cpu": "2"},
        shutdown_grace=10,
    )


@pytest.fixture
def sandbox_for(context: NodeContext) -> Callable[..., tuple[PodSandbox, list[tuple[str, str]]]]:
    def make(
        pod: Pod, api: FakeApi | None = None, podman: PodmanRuntime | None = None
    ) -> tuple[PodSandbox, list[tuple[str, str]]]:
        warnings: list[tuple[str, str]] = []
        api_ = cast(NodeApi, api or FakeApi())
        node = replace(context, podman=podman)
        sandbox = PodSandbox(pod, node, api_, AddressPool(), lambda *w: warnings.append(w))
        return sandbox, warnings

    return make


def test_the_pod_gets_a_home_an_address_and_a_private_kubeconfig(
    make_pod: Callable[..., Pod], sandbox_for: Callable[..., Any]
) -> None:
    pod = make_pod()
    sandbox, _ = sandbox_for(pod)
    sandbox.prepare(pod)
    env = sandbox.node_env(pod)
    assert env["HOME"] == str(sandbox.dir) and sandbox.dir.is_dir()
    assert sandbox.dir.name == f"shop_web-1_{pod.uid}"
    assert env["PATH"] == "/venv/bin:/usr/local/bin:/usr/bin:/bin"
    assert (env["HOSTNAME"], env["KUBERNETES_NODE_NAME"]) == ("web-1", "local-node")
    kubeconfig = Path(env["KUBECONFIG"])
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    assert yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"] == "token-1"
    assert sandbox.placement().pod_ip == sandbox.pod_ip
    assert sandbox.pod_ip.startswith("127.1.")


@pytest.mark.parametrize(("pod_flag", "account_flag"), [(False, None), (None, False)])
def test_no_token_when_automount_is_off(
    make_pod: Callable[..., Pod],
    sandbox_for: Callable[..., Any],
    pod_flag: bool | None,
    account_flag: bool | None,
) -> None:
    spec = {} if pod_flag is None else {"automountServiceAccountToken": pod_flag}
    pod = make_pod(**spec)
    api = FakeApi(account_automount=account_flag)
    sandbox, _ = sandbox_for(pod, api)
    sandbox.prepare(pod)
    assert "KUBECONFIG" not in sandbox.node_env(pod)
    assert api.tokens == []


def test_the_token_is_renewed_only_when_due(
    make_pod: Callable[..., Pod], sandbox_for: Callable[..., Any]
) -> None:
    pod, api = make_pod(), FakeApi()
    sandbox, _ = sandbox_for(pod, api)
    sandbox.prepare(pod)
    sandbox.refresh_token(pod)
    assert api.tokens == ["token-1"]
    sandbox.token_refresh_at = datetime.now(UTC) - timedelta(seconds=1)
    sandbox.refresh_token(pod)
    assert api.tokens == ["token-1", "token-2"]
    assert "token-2" in Path(sandbox.node_env(pod)["KUBECONFIG"]).read_text()


def test_volumes_are_created_and_moved_mounts_reported(
    make_pod: Callable[..., Pod], sandbox_for: Callable[..., Any], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    container = {
        "name": "main",
        "image": "ignored",
        "command": ["python"],
        "volumeMounts": [
            {"name": "data", "mountPath": "/mnt/data"},
            {"name": "same", "mountPath": str(tmp_path / "same") + "/"},
        ],
    }
    volumes = [
        {"name": "data", "hostPath": {"path": str(data), "type": "DirectoryOrCreate"}},
        {"name": "same", "hostPath": {"path": str(tmp_path / "same"), "type": "DirectoryOrCreate"}},
        {
            "name": "file",
            "hostPath": {"path": str(tmp_path / "f" / "x.txt"), "type": "FileOrCreate"},
        },
        {"name": "scratch", "emptyDir": {}},
    ]
    pod = make_pod([container], volumes=volumes)
    sandbox, warnings = sandbox_for(pod)
    sandbox.prepare(pod)
    assert data.is_dir() and (tmp_path / "f" / "x.txt").is_file()
    assert (sandbox.dir / "volumes" / "scratch").is_dir()
    assert [reason for reason, _ in warnings] == ["VolumeMountIgnored"]
    assert f"the process must use {data}" in warnings[0][1]


def test_a_missing_host_path_directory_prevents_the_pod(
    make_pod: Callable[..., Pod], sandbox_for: Callable[..., Any], tmp_path: Path
) -> None:
    volume = {"name": "d", "hostPath": {"path": str(tmp_path / "absent"), "type": "Directory"}}
    pod = make_pod(volumes=[volume])
    sandbox, _ = sandbox_for(pod)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        sandbox.prepare(pod)


def test_removing_the_sandbox_removes_the_directory_and_frees_the_address(
    make_pod: Callable[..., Pod], sandbox_for: Callable[..., Any]
) -> None:
    pod = make_pod()
    sandbox, _ = sandbox_for(pod)
    sandbox.prepare(pod)
    address = sandbox.pod_ip
    sandbox.remove()
    assert not sandbox.dir.exists()
    assert sandbox.addresses.claim("another-uid", preferred=address) == address


def test_directories_of_pods_that_are_gone_are_removed(tmp_path: Path) -> None:
    for name in ("ns_a_uid-1", "ns_b_uid-2", "other-ns_c_uid-3"):
        (tmp_path / name).mkdir()
    removed = remove_stale_dirs(tmp_path, {"uid-2"})
    assert sorted(p.name for p in removed) == ["ns_a_uid-1", "other-ns_c_uid-3"]
    assert [p.name for p in tmp_path.iterdir()] == ["ns_b_uid-2"]
    assert remove_stale_dirs(tmp_path / "missing", set()) == []


KUBE_API_ACCESS = {
    "name": "kube-api-access-x1",
    "projected": {
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {
                "configMap": {
                    "name": "kube-root-ca.crt",
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                }
            },
            {
                "downwardAPI": {
                    "items": [
                        {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                    ]
                }
            },
        ],
    },
}


def test_in_a_container_the_token_is_the_projected_volume_and_the_api_is_in_env(
    make_pod: Callable[..., Pod], sandbox_for: Callable[..., Any]
) -> None:
    mount = {"name": KUBE_API_ACCESS["name"], "mountPath": SA_DIR, "readOnly": True}
    pod = make_pod(
        [{"name": "main", "image": "img", "volumeMounts": [mount]}],
        volumes=[KUBE_API_ACCESS, {"name": "scratch", "emptyDir": {}}],
    )
    api = FakeApi(
        labels={RUNTIME_LABEL: "container"},
        objects={"configmap/kube-root-ca.crt": {"ca.crt": "PEM"}},
    )
    sandbox, _ = sandbox_for(pod, api, podman=cast(PodmanRuntime, object()))
    sandbox.prepare(pod)
    assert sandbox.runtime == "container"
    files = sandbox.mounts.paths[KUBE_API_ACCESS["name"]]
    assert (files / "token").read_text() == "token-1"
    assert (files / "ca.crt").read_text() == "PEM"
    assert (files / "namespace").read_text() == "shop"
    assert stat.S_IMODE((files / "token").stat().st_mode) == 0o644
    assert stat.S_IMODE(sandbox.mounts.paths["scratch"].stat().st_mode) == 0o777
    env = sandbox.node_env(pod)
    assert env == {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": "6443",
        "KUBERNETES_SERVICE_PORT_HTTPS": "6443",
    }
    (mounted,) = container_mounts(pod.containers[0], sandbox.mounts)
    assert (mounted.source, mounted.target, mounted.read_only) == (files, SA_DIR, True)
    sandbox.refresh_token(pod)
    assert api.tokens == ["token-1"], "a token is renewed only when due"


def test_a_missing_config_map_of_a_volume_stops_the_sandbox(
    make_pod: Callable[..., Pod], sandbox_for: Callable[..., Any]
) -> None:
    pod = make_pod(volumes=[{"name": "conf", "configMap": {"name": "absent"}}])
    api = FakeApi(labels={RUNTIME_LABEL: "container"})
    sandbox, _ = sandbox_for(pod, api, podman=cast(PodmanRuntime, object()))
    with pytest.raises(VolumeError, match='volume conf: configmap "absent" not found in shop'):
        sandbox.prepare(pod)


def claim_objects(path: Path, phase: str = "Bound", **pv_spec: Any) -> dict[str, Any]:
    """A claim `data` in namespace shop bound to PersistentVolume `disk` at `path`."""
    spec = {"claimRef": {"namespace": "shop", "name": "data"}, **pv_spec}
    if "local" not in spec and "nfs" not in spec:
        spec["hostPath"] = {"path": str(path)}
    return {
        "pvc/data": {"spec": {"volumeName": "disk"}, "status": {"phase": phase}},
        "pv/disk": {"spec": spec},
    }


def test_a_claim_is_mounted_from_its_bound_host_path_volume(
    make_pod: Callable[..., Pod], sandbox_for: Callable[..., Any], tmp_path: Path
) -> None:
    mounts = [
        {"name": "data", "mountPath": "/data"},
        {"name": "frozen", "mountPath": "/frozen"},
    ]
    pod = make_pod(
        [{"name": "main", "image": "img", "volumeMounts": mounts}],
        volumes=[
            {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "frozen", "persistentVolumeClaim": {"claimName": "data", "readOnly": True}},
        ],
    )
    api = FakeApi(labels={RUNTIME_LABEL: "container"}, objects=claim_objects(tmp_path))
    sandbox, _ = sandbox_for(pod, api, podman=cast(PodmanRuntime, object()))
    sandbox.prepare(pod)
    data, frozen = container_mounts(pod.containers[0], sandbox.mounts)
    assert (data.source, data.target, data.read_only) == (tmp_path, "/data", False)
    assert (frozen.source, frozen.target, frozen.read_only) == (tmp_path, "/frozen", True)


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        ({}, 'persistentvolumeclaim "data" not found'),
        (claim_objects(Path("/"), phase="Pending"), 'persistentvolumeclaim "data" is not bound'),
        (
            {**claim_objects(Path("/")), "pv/disk": {"spec": {"claimRef": {"name": "other"}}}},
            'persistentvolume "disk" is not bound to it',
        ),
        (claim_objects(Path("/"), nfs={"path": "/x"}), "not a hostPath or local volume"),
        (claim_objects(Path("/nonexistent/disk")), "/nonexistent/disk of persistentvolume"),
    ],
)
def test_a_claim_the_node_cannot_mount_stops_the_sandbox(
    make_pod: Callable[..., Pod],
    sandbox_for: Callable[..., Any],
    objects: dict[str, Any],
    message: str,
) -> None:
    pod = make_pod(volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}])
    api = FakeApi(labels={RUNTIME_LABEL: "container"}, objects=objects)
    sandbox, _ = sandbox_for(pod, api, podman=cast(PodmanRuntime, object()))
    with pytest.raises(VolumeError, match=f"volume data: .*{message}"):
        sandbox.prepare(pod)


def test_an_unknown_runtime_label_is_refused(
    make_pod: Callable[..., Pod], sandbox_for: Callable[..., Any]
) -> None:
    pod = make_pod()
    sandbox, _ = sandbox_for(pod, FakeApi(labels={RUNTIME_LABEL: "vm"}))
    with pytest.raises(ValueError, match="names no runtime"):
        sandbox.prepare(pod)


def test_item_paths_cannot_leave_their_volume() -> None:
    with pytest.raises(VolumeError, match=r"without '\.\.'"):
        safe_relative("../../etc/passwd", "conf")
    with pytest.raises(VolumeError, match="must be relative"):
        safe_relative("/etc/passwd", "conf")
