"""The local node agent: registers a Node and runs the pods bound to it in containers.

controlplane.py starts it as
    python -m localcluster.nodeagent --kubeconfig K --node-name N --state-dir D --bin-dir B \
        --runtime container|process
It talks to the API server only through the kubeconfig K, keeps the Node Ready (a Lease
renewed every 10 s, the Ready heartbeat every 40 s, lifecycle taints removed), and watches the
pods bound to N, one `PodWorker` thread per pod. It survives API server restarts (every call
is retried, the watch lists again after an error) and on SIGTERM ends its pods' processes
(SIGTERM, SIGKILL after their grace, capped by --shutdown-grace-seconds) and exits 0.

Like a kubelet it reports pod IPs (127.1.x.y, one per pod), resolves env with the downward
API, ConfigMaps and Secrets, restarts containers per restartPolicy with backoff (1 s doubling
to 30 s, reset after 60 s running) and deletes pods gracefully. Pods run with the runtime
their namespace asks for, else --runtime (podsandbox.py):
  - container (the default): podman + runc from the pod's image, with its securityContext,
    volumes, projected ServiceAccount token, memory limit and grace period (podcontainer.py);
  - process (an explicit fallback): command[0] from --bin-dir, then PATH, as a local process
    of the agent's user, the token in a kubeconfig (KUBECONFIG), nothing mounted.
Unlike a kubelet:
  - images are never pulled: an image missing from the local store is ErrImagePull;
  - probes are not run (a running container is ready), lifecycle hooks neither, and
    activeDeadlineSeconds is not enforced;
  - networking is the host's: no network namespace per pod, no Services or DNS;
  - there is no kubelet API, so `kubectl logs/exec` do not work: each pod's stdout and stderr
    are appended to D/logs/<namespace>_<name>.log.
On start it stops the processes and containers a previous agent left, starts afresh the pods
that are not finished, and removes the directories of deleted pods.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localcluster.containertools import tool_env
from localcluster.nodeapi import NodeApi, WatchExpired, describe
from localcluster.nodeobject import HostFacts, node_manifest, node_status, untainted
from localcluster.podaddress import AddressPool
from localcluster.podcontainer import PodmanRuntime
from localcluster.podprocess import Backoff, stop_leftovers
from localcluster.podsandbox import RUNTIMES, NodeContext, remove_stale_dirs
from localcluster.podspec import Pod
from localcluster.podworker import PodWorker

log = logging.getLogger("localcluster.nodeagent")

LEASE_EVERY = 10.0
STATUS_EVERY = 40.0
WATCH_SECONDS = 240
LEFTOVER_GRACE = 5.0
# API retries back off up to this: short, so that pods run soon after an API server restart.
RETRY_CAP = 5.0


@dataclass(frozen=True)
class AgentConfig:
    kubeconfig: Path
    node_name: str
    state_dir: Path
    bin_dir: Path
    shutdown_grace: float
    runtime: str = "container"

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> AgentConfig:
        parser = argparse.ArgumentParser(prog="localcluster.nodeagent", description=__doc__)
        parser.add_argument("--kubeconfig", type=Path, required=True)
        parser.add_argument("--node-name", required=True)
        parser.add_argument("--state-dir", type=Path, required=True)
        parser.add_argument("--bin-dir", type=Path, required=True)
        parser.add_argument(
            "--shutdown-grace-seconds",
            type=float,
            default=10.0,
            help="at most this long for a pod's processes to end when the agent stops",
        )
        parser.add_argument(
            "--runtime",
            choices=RUNTIMES,
            default="container",
            help="how pods run unless their namespace says otherwise (process is a fallback)",
        )
        args = parser.parse_args(argv)
        return cls(
            args.kubeconfig.resolve(),
            args.node_name,
            args.state_dir.resolve(),
            args.bin_dir.absolute(),
            args.shutdown_grace_seconds,
            args.runtime,
        )


class NodeAgent:
    def __init__(self, config: AgentConfig, api: NodeApi) -> None:
        self.config = config
        self.api = api
        config.state_dir.mkdir(parents=True, exist_ok=True)
        podman = (
            PodmanRuntime(tool_env(), config.node_name, config.state_dir)
            if shutil.which("podman")
            else None
        )
        self.facts = HostFacts.detect(config.state_dir)
        if config.runtime == "container" and podman is not None:
            self.facts = replace(self.facts, runtime_version=podman.version())
        self.context = NodeContext(
            node_name=config.node_name,
            state_dir=config.state_dir,
            bin_dir=config.bin_dir,
            endpoint=api.endpoint(),
            allocatable=self.facts.capacity(),
            shutdown_grace=config.shutdown_grace,
            runtime=config.runtime,
            podman=podman,
        )
        self.addresses = AddressPool()
        self.stopping = threading.Event()
        self.ready_since = datetime.now(UTC)
        self.server_version: str | None = None
        self._workers: dict[str, PodWorker] = {}
        self._lock = threading.Lock()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        stop_leftovers(self.context.pods_dir.glob("*/*.pid"), LEFTOVER_GRACE)
        if self.context.podman is not None:
            for name in self.context.podman.remove_leftovers(LEFTOVER_GRACE):
                log.info("removed container %s left by a previous agent", name)
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        threading.Thread(target=self._watch_pods, name="pod-watch", daemon=True).start()
        log.info(
            "node %s: agent running, state in %s", self.config.node_name, self.config.state_dir
        )
        while not self.stopping.wait(1):
            pass
        self._shutdown()
        return 0

    def _shutdown(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
        log.info("node %s: stopping, ending %d pods", self.config.node_name, len(workers))
        for worker in workers:
            worker.stop()
        deadline = time.monotonic() + self.config.shutdown_grace + 5
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        log.info("node %s: agent stopped", self.config.node_name)

    def _pause_after(self, what: str, error: Exception, retry: Backoff) -> None:
        """Every failure is retried, after a pause that grows while failures repeat."""
        pause = retry.delay(0)
        log.warning("%s failed (%s), retrying in %gs", what, describe(error), pause)
        self.stopping.wait(pause)

    # The Node: registration, heartbeat, taints.

    def _heartbeat(self) -> None:
        retry = Backoff(initial=1.0, cap=RETRY_CAP)
        node_uid: str | None = None
        synced = -STATUS_EVERY
        while not self.stopping.is_set():
            try:
                if node_uid is None or time.monotonic() - synced >= STATUS_EVERY:
                    node_uid = self._sync_node()
                    synced = time.monotonic()
                self.api.renew_lease(self.config.node_name, node_uid)
                retry.reset()
                self.stopping.wait(LEASE_EVERY)
            except Exception as e:
                node_uid = None
                self._pause_after("node heartbeat", e, retry)

    def _sync_node(self) -> str:
        name = self.config.node_name
        if self.server_version is None:
            self.server_version = self.api.server_version()
        node = self.api.ensure_node(node_manifest(name, self.facts))
        taints = untainted((node.get("spec") or {}).get("taints") or [])
        if taints is not None:
            log.info("node %s: removing the lifecycle controller's taints", name)
            self.api.set_taints(name, taints)
        status = node_status(
            name, self.facts, self.server_version, self.ready_since, datetime.now(UTC)
        )
        self.api.patch_node_status(name, status)
        return str(node["metadata"]["uid"])

    # Pods bound to the node.

    def _watch_pods(self) -> None:
        retry = Backoff(initial=1.0, cap=RETRY_CAP)
        version: str | None = None
        while not self.stopping.is_set():
            try:
                if version is None:
                    version = self._relist()
                events = self.api.watch_pods(self.config.node_name, version, WATCH_SECONDS)
                for kind, obj in events:
                    version = obj["metadata"]["resourceVersion"]
                    self._dispatch(kind, obj)
                    if self.stopping.is_set():
                        return
                retry.reset()
            except WatchExpired:
                version = None
            except Exception as e:
                version = None
                self._pause_after("pod watch", e, retry)

    def _relist(self) -> str:
        items, version = self.api.list_pods(self.config.node_name)
        seen = set()
        for raw in items:
            seen.add(raw["metadata"]["uid"])
            self._dispatch("MODIFIED", raw)
        with self._lock:
            gone = [uid for uid in self._workers if uid not in seen]
            for uid in gone:
                self._workers.pop(uid).kill()
        for path in remove_stale_dirs(self.context.pods_dir, seen):
            log.info("removed %s: its pod no longer exists", path)
        return version

    def _dispatch(self, kind: str, raw: dict[str, Any]) -> None:
        if kind == "BOOKMARK":
            return
        pod = Pod.parse(raw)
        with self._lock:
            worker = self._workers.get(pod.uid)
            if kind == "DELETED":
                if worker is not None:
                    self._workers.pop(pod.uid).kill()
            elif worker is not None:
                worker.update(pod)
            elif not self.stopping.is_set():
                worker = PodWorker(pod, self.context, self.api, self.addresses)
                self._workers[pod.uid] = worker
                worker.start()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s [%(threadName)s] %(message)s",
        stream=sys.stderr,
    )
    # urllib3 logs each of its retries; the agent logs the failure once, with its backoff.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    config = AgentConfig.parse(argv)
    try:
        api = NodeApi.from_kubeconfig(config.kubeconfig)
    except Exception as e:
        log.error("cannot use kubeconfig %s: %s", config.kubeconfig, e)
        return 1
    return NodeAgent(config, api).run()


if __name__ == "__main__":
    sys.exit(main())
