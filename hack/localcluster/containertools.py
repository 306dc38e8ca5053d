"""The project's own configuration for podman and buildah, and how to call them.

The host's own container setup is left alone: `tool_env()` points both tools at a
containers.conf, a storage.conf and a registries.conf kept under
~/.cache/collectjob/containers/ (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF,
CONTAINERS_REGISTRIES_CONF), so the image store, run state and events live there, and
`make image` and the node agent share one store that no other tool on the machine touches.
Containers share the host's network namespace (`netns = "host"`; builds run with
`--network none`): no bridge, so nothing changes the host's firewall or forwarding. The
settings are those this kind of host needs (see README, "Images and containers"):
  - runc, not crun: crun refuses hosts with hybrid cgroups;
  - cgroupfs, not systemd, and events to a file: no systemd or journald is assumed;
  - default ulimits below the host's hard limits: root cannot raise rlimits here;
  - the overlay driver, natively (5x faster to start a container than vfs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from localcluster.paths import CACHE_DIR, REPO_ROOT

CONTAINERS_DIR = CACHE_DIR / "containers"
INSTALL_SCRIPT = REPO_ROOT / "hack" / "install-container-tools.sh"
RUNC = "/usr/sbin/runc"
TOOLS = ("podman", "buildah", "runc", "debootstrap", "skopeo")


def containers_conf(root: Path) -> str:
    return (
        "[containers]\n"
        'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        'netns = "host"\n'
        "\n[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'events_logfile_path = "{root / "events.log"}"\n'
        f'tmp_dir = "{root / "tmp"}"\n'
        f'static_dir = "{root / "storage" / "libpod"}"\n'
        f'volume_path = "{root / "storage" / "volumes"}"\n'
    )


def exits_dir(env: Mapping[str, str]) -> Path:
    """Where conmon records each container's exit status when it dies (`<tmp_dir>/exits/<id>`,
    tmp_dir as containers_conf sets it), before podman has cleaned up after the container."""
    return Path(env["CONTAINERS_CONF"]).parent / "tmp" / "exits"


def storage_conf(root: Path) -> str:
    return (
        "[storage]\n"
        'driver = "overlay"\n'
        f'graphroot = "{root / "storage"}"\n'
        f'runroot = "{root / "run"}"\n'
    )


def tool_env(root: Path = CONTAINERS_DIR, base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment podman and buildah run with; writes the two config files if needed."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    for name, text in (
        ("containers.conf", containers_conf(root)),
        ("storage.conf", storage_conf(root)),
    ):
        path = root / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    env = {k: v for k, v in base.items() if not k.startswith(("CONTAINERS_", "BUILDAH_"))}
    env["CONTAINERS_CONF"] = str(root / "containers.conf")
    env["CONTAINERS_STORAGE_CONF"] = str(root / "storage.conf")
    # podman looks for registries.conf and policy.json in /etc; an empty search list keeps a
    # short name such as `collectjob:dev` to the local store.
    env["CONTAINERS_REGISTRIES_CONF"] = str(_registries_conf(root))
    env.pop("KUBECONFIG", None)
    return env


def _registries_conf(root: Path) -> Path:
    path = root / "registries.conf"
    text = 'unqualified-search-registries = []\nshort-name-mode = "disabled"\n'
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def ensure_tools() -> None:
    """Install the Debian packages if any tool is missing (hack/install-container-tools.sh)."""
    if all(shutil.which(t) or Path("/usr/sbin", t).exists() for t in TOOLS):
        return
    subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True)


def run_tool(
    argv: Sequence[str], env: Mapping[str, str], timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run podman/buildah/skopeo with the project's configuration, output captured."""
    result = subprocess.run(
        list(argv), env=dict(env), capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:3])} exited {result.returncode}: {result.stderr.strip()[-2000:]}"
        )
    return result
