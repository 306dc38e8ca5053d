"""A container spec becomes one `podman run` command line, as a CRI runtime would run it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from localcluster.podcontainer import (
    ContainerConfigError,
    Mount,
    container_name,
    container_user,
    memory_bytes,
    run_argv,
    runc_still_in_init,
)
from localcluster.podspec import Pod, SecurityContext

RESTRICTED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _argv(make_pod: Callable[..., Pod], container: dict[str, Any], **spec: Any) -> list[str]:
    pod = make_pod([{"name": "main", "image": "collectjob:dev", **container}], **spec)
    spec_ = pod.containers[0]
    user = container_user(spec_.security, "10001:10001")
    mounts = [Mount(Path("/state/pods/x/volumes/tmp"), "/tmp", False)]
    return run_argv(
        "k8s_main", spec_, user, {"A": "1", "SECRET": "s3cr3t", "PATH": "/x"}, mounts, "web-1", {}
    )


def test_a_restricted_container_runs_read_only_without_capabilities(
    make_pod: Callable[..., Pod],
) -> None:
    argv = _argv(
        make_pod,
        {"securityContext": RESTRICTED, "resources": {"limits": {"memory": "64Mi"}}},
        securityContext={"runAsUser": 10001, "runAsGroup": 10001},
    )
    assert argv[:2] == ["podman", "run"]
    for flag in (
        "--network=host",
        "--pull=never",
        "--user=10001:10001",
        "--read-only",
        "--read-only-tmpfs=false",
        "--cap-drop=ALL",
        "--memory=67108864",
    ):
        assert flag in argv, flag
    assert argv[argv.index("--security-opt") + 1] == "no-new-privileges"
    assert "seccomp=unconfined" not in argv
    assert argv[argv.index("--volume") + 1] == "/state/pods/x/volumes/tmp:/tmp:rw"
    assert argv[-1] == "collectjob:dev"


def test_env_values_stay_off_the_command_line_except_podmans_own(
    make_pod: Callable[..., Pod],
) -> None:
    argv = _argv(make_pod, {})
    assert "s3cr3t" not in " ".join(argv)
    env = [argv[i + 1] for i, a in enumerate(argv) if a == "--env"]
    assert env == ["A", "SECRET", "PATH=/x"]


def test_command_replaces_the_entrypoint_and_args_the_cmd(make_pod: Callable[..., Pod]) -> None:
    argv = _argv(make_pod, {"command": ["collectjob-worker"], "args": ["run", "$(A)"]})
    assert '--entrypoint=["collectjob-worker"]' in argv
    assert argv[-3:] == ["collectjob:dev", "run", "1"]
    assert _argv(make_pod, {"args": ["x"]})[-2:] == ["collectjob:dev", "x"]


def test_unset_seccomp_is_unconfined_as_on_a_kubelet(make_pod: Callable[..., Pod]) -> None:
    argv = _argv(make_pod, {})
    assert "seccomp=unconfined" in argv
    with pytest.raises(ContainerConfigError, match="Localhost"):
        _argv(make_pod, {"securityContext": {"seccompProfile": {"type": "Localhost"}}})


@pytest.mark.parametrize(
    ("security", "image_user", "expected"),
    [
        (SecurityContext(run_as_user=10001, run_as_group=10001), "", "10001:10001"),
        (SecurityContext(run_as_user=10001), "", "10001:0"),
        (SecurityContext(), "10001:10001", "10001:10001"),
        (SecurityContext(run_as_non_root=True), "10001", "10001"),
        (SecurityContext(run_as_group=5), "7", "7:5"),
    ],
)
def test_user_from_the_security_context_else_the_image(
    security: SecurityContext, image_user: str, expected: str
) -> None:
    assert container_user(security, image_user) == expected


@pytest.mark.parametrize(
    ("security", "image_user", "message"),
    [
        (SecurityContext(run_as_non_root=True), "", "will run as root"),
        (SecurityContext(run_as_non_root=True, run_as_user=0), "10001", "will run as root"),
        (SecurityContext(run_as_non_root=True), "collectjob", "non-numeric user"),
    ],
)
def test_run_as_non_root_refuses_root(
    security: SecurityContext, image_user: str, message: str
) -> None:
    with pytest.raises(ContainerConfigError, match=message):
        container_user(security, image_user)


def test_memory_limits_in_bytes_and_kubelet_style_names() -> None:
    assert memory_bytes({"memory": "1Gi"}) == 1 << 30
    assert memory_bytes({"memory": "500M"}) == 500_000_000
    assert memory_bytes({"cpu": "1"}) is None
    assert container_name("ns", "pod", "0b6c3c1e-0000", "main", 2) == "k8s_main_pod_ns_0b6c3c1e_2"


def test_a_process_named_as_runcs_init_has_not_reached_the_entrypoint_yet() -> None:
    """A signal sent to runc's init before it execs the entrypoint is lost: the node waits."""
    rename = (
        "import sys, time; open('/proc/self/comm', 'w').write(sys.argv[1]); print(); time.sleep(30)"
    )
    for comm, in_init in (("runc:[2:INIT]", True), ("tini", False)):
        with subprocess.Popen(
            [sys.executable, "-c", rename, comm], stdout=subprocess.PIPE
        ) as child:
            assert child.stdout is not None
            child.stdout.readline()  # renamed
            try:
                assert runc_still_in_init(child.pid) is in_init, comm
            finally:
                child.kill()
            child.wait()
            assert runc_still_in_init(child.pid) is False, "a pid that is gone is not in init"
    assert runc_still_in_init(0) is False
