"""A pod's sandbox: its directory, address, volumes, identity and the env the node adds."""

from __future__ import annotations

import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from localcluster.nodeapi import NodeApi
from localcluster.podaddress import AddressPool
from localcluster.podidentity import ClusterEndpoint, PodToken
from localcluster.podsandbox import NodeContext, PodSandbox, remove_stale_dirs
from localcluster.podspec import Pod


class FakeApi:
    """The two calls a sandbox makes: the account's automount flag and a TokenRequest."""

    def __init__(self, account_automount: bool | None = None) -> None:
        self.automount = account_automount
        self.tokens: list[str] = []

    def account_automount(self, namespace: str, name: str) -> bool | None:
        return self.automount

    def request_token(self, pod: Pod, seconds: int) -> PodToken:
        self.tokens.append(f"token-{len(self.tokens) + 1}")
        return PodToken(self.tokens[-1], datetime.now(UTC) + timedelta(seconds=seconds))


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
    def make(pod: Pod, api: FakeApi | None = None) -> tuple[PodSandbox, list[tuple[str, str]]]:
        warnings: list[tuple[str, str]] = []
        api_ = cast(NodeApi, api or FakeApi())
        sandbox = PodSandbox(pod, context, api_, AddressPool(), lambda *w: warnings.append(w))
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
