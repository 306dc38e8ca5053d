"""Start, reuse and stop the local control plane: etcd, API server, controllers, scheduler, node.

`ensure_up` is idempotent: a control plane that is already running and ready is reused.
Every server binds to 127.0.0.1 on a free port; every client gets the kubeconfig explicitly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from localcluster import pidfile
from localcluster.containertools import tool_env
from localcluster.paths import NODE_NAME, REPO_ROOT, ClusterPaths
from localcluster.pidfile import process_exited as process_exited  # where it always was
from localcluster.pki import ensure_pki
from localcluster.podcontainer import PodmanRuntime
from localcluster.safety import require_loopback as require_loopback  # where it always was

BUILD_SCRIPT = REPO_ROOT / "hack" / "build-binaries.sh"
SERVICE_CIDR = "10.0.0.0/24"
# The node's default pod runtime (`container`, or the `process` fallback); a namespace's
# label local-node.collect.dev/runtime overrides it per namespace.
RUNTIME_ENV = "COLLECTJOB_NODE_RUNTIME"
STOP_GRACE = 20.0
# Stop order: the node first (it ends its pods), etcd last.
COMPONENTS = ("nodeagent", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")
DEMO_PROCESSES = ("collectjob-console",)
"""Started by `make demo` (localcluster.demo); stopped with the cluster."""


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    @classmethod
    def free(cls) -> Ports:
        return cls(*(free_port() for _ in range(5)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def build_binaries() -> Path:
    """The directory of the cached binaries, building them first if missing."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
    return Path(result.stdout.strip().splitlines()[-1])


class ControlPlane:
    def __init__(self, paths: ClusterPaths | None = None) -> None:
        self.paths = paths or ClusterPaths.default()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self._ports().apiserver}"

    def _ports(self) -> Ports:
        return Ports(**json.loads(self.paths.state_file.read_text())["ports"])

    def _pid(self, name: str) -> int | None:
        return pidfile.read_live(self.paths.run / f"{name}.pid")

    def running(self) -> bool:
        return (
            self.paths.state_file.exists()
            and all(self._pid(c) for c in COMPONENTS)
            and self.api_ready()
        )

    def api_ready(self) -> bool:
        return self._get("/readyz") == "ok"

    def _get(self, path: str) -> str | None:
        pki = self.paths.pki
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        try:
            with urllib.request.urlopen(self.server + path, context=ctx, timeout=2) as r:
                return str(r.read().decode())
        except (OSError, ValueError):
            return None

    def ensure_up(self) -> float:
        """Start whatever is not running; returns the seconds it took to be ready."""
        start = time.monotonic()
        if self.running():
            return time.monotonic() - start
        self.down(keep=("images",))
        bin_dir = build_binaries()
        for d in (self.paths.run, self.paths.logs, self.paths.kubectl.parent):
            d.mkdir(parents=True, exist_ok=True)
        ensure_pki(self.paths.pki)
        ports = Ports.free()
        self.paths.state_file.write_text(json.dumps({"ports": asdict(ports), "bin": str(bin_dir)}))
        if self.paths.kubectl.is_symlink() or self.paths.kubectl.exists():
            self.paths.kubectl.unlink()
        self.paths.kubectl.symlink_to(bin_dir / "kubectl")
        self._write_kubeconfig()
        self._start_etcd(bin_dir, ports)
        self._start_apiserver(bin_dir, ports)
        wait_until(self.api_ready, 90, "kube-apiserver /readyz", interval=0.1)
        self._start_controllers(bin_dir, ports)
        self._start_nodeagent()
        wait_until(self._node_ready, 60, f"node {NODE_NAME} to be Ready")
        return time.monotonic() - start

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port, for outage tests."""
        self._stop("kube-apiserver")
        wait_until(lambda: not self.api_ready(), 30, "kube-apiserver to stop answering")
        bin_dir = Path(json.loads(self.paths.state_file.read_text())["bin"])
        self._start_apiserver(bin_dir, self._ports())
        wait_until(self.api_ready, 90, "kube-apiserver /readyz after a restart", interval=0.1)

    def restart_etcd(self) -> None:
        """Stop etcd and start it again on the same ports and data, for outage tests."""
        self._stop("etcd")
        bin_dir = Path(json.loads(self.paths.state_file.read_text())["bin"])
        self._start_etcd(bin_dir, self._ports())
        wait_until(self.api_ready, 90, "kube-apiserver /readyz after an etcd restart", interval=0.1)

    def kill_node(self) -> None:
        """SIGKILL the node agent and the processes of the pods it runs, as a node that
        died: nothing reports the pods' end and the Node's Lease is no longer renewed, so
        the node lifecycle controller marks it NotReady. For fault tests; `start_node`
        brings it back."""
        pods = (self.paths.node_state / "pods").glob("*/*.pid")  # the process runtime's
        for path in (self.paths.run / "nodeagent.pid", *pods):
            pid = pidfile.read_live(path)
            if pid is not None:
                pidfile.signal_group(pid, signal.SIGKILL)
        env = tool_env()
        if shutil.which("podman", path=env.get("PATH")):  # the container runtime's
            PodmanRuntime(env, NODE_NAME, self.paths.node_state).remove_leftovers(0)

    def start_node(self) -> None:
        """Start the node agent again after `kill_node`; returns once the Node is Ready."""
        self._start_nodeagent()
        wait_until(self._node_ready, 60, f"node {NODE_NAME} to be Ready again")

    def _node_ready(self) -> bool:
        body = self._get(f"/api/v1/nodes/{NODE_NAME}")
        if not body:
            return False
        conditions = json.loads(body).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.paths.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=self.paths.root,
        )
        log.close()
        pidfile.write(self.paths.run / f"{name}.pid", proc.pid)
        time.sleep(0.05)
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited at once; see {self.paths.logs / name}.log")

    def _start_etcd(self, bin_dir: Path, p: Ports) -> None:
        """etcd serves TLS and accepts only clients with a certificate from the local CA."""
        pki = self.paths.pki
        client, peer = f"https://127.0.0.1:{p.etcd_client}", f"http://127.0.0.1:{p.etcd_peer}"
        self._spawn(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=local",
                f"--data-dir={self.paths.etcd_data}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=local={peer}",
                "--unsafe-no-fsync=true",
                "--client-cert-auth=true",
                f"--trusted-ca-file={pki / 'ca.crt'}",
                f"--cert-file={pki / 'etcd-server.crt'}",
                f"--key-file={pki / 'etcd-server.key'}",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self, bin_dir: Path, p: Ports) -> None:
        pki = self.paths.pki
        self._spawn(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers=https://127.0.0.1:{p.etcd_client}",
                f"--etcd-cafile={pki / 'ca.crt'}",
                f"--etcd-certfile={pki / 'apiserver-etcd-client.crt'}",
                f"--etcd-keyfile={pki / 'apiserver-etcd-client.key'}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={p.apiserver}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=Node,RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                f"--service-account-issuer=https://127.0.0.1:{p.apiserver}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _start_controllers(self, bin_dir: Path, p: Ports) -> None:
        pki, kubeconfig = self.paths.pki, str(self.paths.kubeconfig)
        self._spawn(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--authentication-skip-lookup=true",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={p.controller_manager}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--concurrent-gc-syncs=5",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--authentication-skip-lookup=true",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={p.scheduler}",
                "--v=1",
            ],
        )

    def _start_nodeagent(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "hack"), "PYTHONUNBUFFERED": "1"}
        env.pop("KUBECONFIG", None)
        runtime = os.environ.get(RUNTIME_ENV) or "container"
        self._spawn(
            "nodeagent",
            [
                sys.executable,
                "-m",
                "localcluster.nodeagent",
                f"--kubeconfig={self.paths.kubeconfig}",
                f"--node-name={NODE_NAME}",
                f"--state-dir={self.paths.node_state}",
                f"--bin-dir={Path(sys.executable).parent}",
                f"--runtime={runtime}",
            ],
            env=env,
        )

    def _write_kubeconfig(self) -> None:
        ca = str(self.paths.pki / "ca.crt")
        pki = self.paths.pki
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": self.server, "certificate-authority": ca},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate": str(pki / "admin.crt"),
                        "client-key": str(pki / "admin.key"),
                    },
                }
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
            "current-context": "local",
        }
        self.paths.kubeconfig.write_text(json.dumps(config, indent=2))

    def down(self, keep: tuple[str, ...] = ()) -> None:
        """Stop every component and remove the cluster's state (the binaries stay cached);
        `keep` names entries of the state directory to leave (a fresh start keeps the
        exported image)."""
        for name in (*DEMO_PROCESSES, *COMPONENTS):
            self._stop(name)
        if self.paths.root.exists():
            doomed = [p for p in self.paths.root.iterdir() if p.name not in keep]
            if doomed:
                subprocess.run(["rm", "-rf", *map(str, doomed)], check=True)
            if not keep:
                self.paths.root.rmdir()

    def _stop(self, name: str) -> None:
        """SIGTERM the component's process group; SIGKILL it after 20 s."""
        pidfile.stop_groups([self.paths.run / f"{name}.pid"], STOP_GRACE)
