"""Faults on the real local cluster: the operator SIGKILLed at random moments, kube-apiserver
and etcd restarted mid-run, children deleted or edited by hand, a bulk patch by label.

After each: every job reaches its correct phase, no child is left without its job, no job
ever had two live workers (watched for the whole test), and every finished output is
row-exact. Convergence times are printed (`-s`); they are not asserted here.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Self
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes import client, watch

from collectjob_api.checkpoint import Checkpoint
from collectjob_api.contract import CHECKPOINT_KEY, ENV_JOB_NAME, ENV_NAMESPACE
from collectjob_operator.settings import WATCH_CLIENT_TIMEOUT
from localcluster.controlplane import ControlPlane
from localcluster.paths import NODE_NAME
from localcluster.pidfile import proc_stat
from operator_fixtures import OperatorProcess

JOB_LABEL = "collect.dev/job"
FLEET_LABEL = "test.collect.dev/fleet"
CHILD_KINDS = ("configmaps", "serviceaccounts", "roles", "rolebindings", "deployments")
SHORT_ROWS = 2000
LONG_ROWS = 8000
MIN_KILLS = 20
SLOW = {"bytesPerSecond": 1024}
"""The CRD's minimum rate: LONG_ROWS (about 210 kB) take over three minutes, so a job is
still running when the test suspends it. Unthrottled, a whole LONG_ROWS file is one chunk
(chunkBytes is at least 1 MiB) and coalesced commits finish even 200,000 rows in seconds."""
STEADY = {"bytesPerSecond": 8 * 1024}
"""LONG_ROWS in about 25 s, a 64 KiB commit every 8 s: a job that runs through a restart."""


class Background:
    """Runs `_run` in a daemon thread for the length of a `with` block; `_stop` is set at
    its end."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=type(self).__name__)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        raise NotImplementedError


class NamespaceWatch(Background):
    """Watches one kind of the test namespace for a whole test, listing again after an
    error (an API server restart, 410 Gone); subclasses observe each event."""

    def __init__(self, list_call: Any, namespace: str, **selector: str) -> None:
        super().__init__()
        self._list, self._namespace, self._selector = list_call, namespace, selector

    def _run(self) -> None:
        version = None
        while not self._stop.is_set():
            try:
                if version is None:
                    self._relisting()
                options: dict[str, Any] = {
                    **self._selector,
                    "timeout_seconds": 5,
                    "_request_timeout": 15,
                }
                if version is not None:
                    options["resource_version"] = version
                for event in watch.Watch().stream(self._list, self._namespace, **options):
                    obj = event["object"]
                    version = obj.metadata.resource_version
                    self._observe(event["type"], obj)
                    if self._stop.is_set():
                        return
            except Exception:  # API server restarting, or 410 Gone: list again
                version = None
                self._stop.wait(0.2)

    def _relisting(self) -> None:
        """A fresh stream replays every object that exists."""

    def _observe(self, kind: str, obj: Any) -> None:
        raise NotImplementedError


class WorkerWatch(NamespaceWatch):
    """Records every moment at which one job had two live worker pods (phase Running, not
    terminating), as the API shows them."""

    def __init__(self, api: client.CoreV1Api, namespace: str) -> None:
        super().__init__(api.list_namespaced_pod, namespace, label_selector=JOB_LABEL)
        self._pods: dict[str, tuple[str, bool]] = {}
        self.violations: list[str] = []

    def _relisting(self) -> None:
        self._pods.clear()

    def _observe(self, kind: str, pod: Any) -> None:
        name = pod.metadata.name
        if kind == "DELETED":
            self._pods.pop(name, None)
            return
        live = pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None
        job = pod.metadata.labels[JOB_LABEL]
        self._pods[name] = (job, live)
        both = sorted(n for n, (j, alive) in self._pods.items() if j == job and alive)
        if len(both) > 1:
            self.violations.append(f"job {job}: live workers {both} at once")


class CheckpointHistory(NamespaceWatch):
    """Every version of the namespace's checkpoints, per job: (epoch, holder, rows)."""

    def __init__(self, api: client.CoreV1Api, namespace: str) -> None:
        super().__init__(api.list_namespaced_config_map, namespace, label_selector=JOB_LABEL)
        self.versions: dict[str, list[tuple[int, str, int]]] = {}

    def _observe(self, kind: str, configmap: Any) -> None:
        text = (configmap.data or {}).get(CHECKPOINT_KEY)
        if kind == "DELETED" or not text:
            return
        checkpoint = Checkpoint.from_json(text)
        seen = (checkpoint.epoch, checkpoint.holder, checkpoint.rows_processed)
        history = self.versions.setdefault(configmap.metadata.labels[JOB_LABEL], [])
        if not history or history[-1] != seen:
            history.append(seen)


class WorkerProcesses(Background):
    """Samples the machine's processes every 50 ms and records every moment at which one
    job had two workers alive, whatever the API said. A worker is a process whose env names
    its job (COLLECTJOB_NAMESPACE/NAME) inside a container, told apart by its own PID
    namespace; the `podman run` that started it carries the same env, in the host's."""

    def __init__(self, namespace: str) -> None:
        super().__init__()
        self._namespace = namespace.encode()
        self.violations: list[str] = []

    def groups(self) -> dict[str, set[str]]:
        """Job name -> the PID namespaces (one per container) of its live workers."""
        found: dict[str, set[str]] = {}
        host = os.readlink("/proc/self/ns/pid")
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                env = dict(
                    entry.split(b"=", 1)
                    for entry in (proc / "environ").read_bytes().split(b"\0")
                    if b"=" in entry
                )
                if env.get(ENV_NAMESPACE.encode()) != self._namespace:
                    continue
                stat = proc_stat(int(proc.name))
                if stat is None or not stat.alive:
                    continue
                group = os.readlink(proc / "ns" / "pid")
                if group == host:
                    continue
            except (OSError, ValueError):
                continue  # gone meanwhile, or not ours to read
            found.setdefault(env.get(ENV_JOB_NAME.encode(), b"").decode(), set()).add(group)
        return found

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for job, groups in self.groups().items():
                if len(groups) > 1:
                    self.violations.append(f"job {job}: worker processes {sorted(groups)} at once")


@pytest.fixture
def worker_watch(core_api, namespace) -> Iterator[WorkerWatch]:
    with WorkerWatch(core_api, namespace) as watcher:
        yield watcher
    assert watcher.violations == [], "a job had two live workers"


class Killer:
    """SIGKILLs the operator at random moments, 0.5 to 12 s after each start, and starts it
    again at once, in a thread, until stopped and at least `minimum` kills were done. The
    range spans start-up, the initial listing and ordinary reconciling (a start takes
    from 2 s on an idle machine to 20 s on a loaded one)."""

    def __init__(self, operator, minimum: int, seed: int) -> None:
        self._operator, self._minimum = operator, minimum
        self._random = random.Random(seed)
        self.kills = 0
        self._stop, self._abort = threading.Event(), threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="killer")

    def _run(self) -> None:
        try:
            while not (self._stop.is_set() and self.kills >= self._minimum):
                if self._abort.wait(self._random.uniform(0.5, 12)):
                    return
                self._operator.kill()
                self.kills += 1
                self._operator.start(wait=False)
        except BaseException as e:  # pytest.fail in start() is a BaseException
            self._error = e

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def wait_kills(self, count: int) -> None:
        """Block until `count` kills were done (bounded: every kill is at most 12 s away)."""
        deadline = time.monotonic() + 13 * count + 60
        while self.kills < count and self._thread.is_alive():
            assert time.monotonic() < deadline, f"only {self.kills} kills"
            self._abort.wait(0.1)

    def stop(self) -> None:
        """Stop after the minimum number of kills; the operator is left running."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=600)
        assert not self._thread.is_alive(), "the killer did not stop"
        if self._error is not None:
            raise self._error
        self._operator.wait_until_healthy()

    def __exit__(self, error: type[BaseException] | None, *_: object) -> None:
        if error is not None:  # the test failed: stop at once
            self._abort.set()
        self.stop()


def phases(cluster, namespace: str) -> dict[str, str | None]:
    items = cluster.kubectl_json("get", "cjob", "-n", namespace)["items"]
    return {j["metadata"]["name"]: (j.get("status") or {}).get("phase") for j in items}


def orphans(cluster, namespace: str) -> list[str]:
    """Children whose job is gone, or whose controller is not the live job of their label."""
    uids = {
        j["metadata"]["name"]: j["metadata"]["uid"]
        for j in cluster.kubectl_json("get", "cjob", "-n", namespace)["items"]
    }
    found = []
    for kind in (*CHILD_KINDS, "pods"):
        items = cluster.kubectl_json("get", kind, "-n", namespace, "-l", JOB_LABEL)["items"]
        for obj in items:
            meta = obj["metadata"]
            job = meta["labels"][JOB_LABEL]
            owner = next((o for o in meta.get("ownerReferences") or () if o.get("controller")), {})
            if job not in uids or (kind != "pods" and owner.get("uid") != uids[job]):
                found.append(f"{kind}/{meta['name']} (job {job})")
    return found


def converge(
    cluster, namespace: str, expected: dict[str, str], wait_for, timeout: float = 240
) -> float:
    """Wait until the jobs are exactly `expected` (name -> phase) and nothing is orphaned;
    the seconds it took."""
    started = time.monotonic()
    wait_for(
        lambda: phases(cluster, namespace) == expected,
        timeout=timeout,
        message=f"phases {expected}",
        interval=0.5,
    )
    wait_for(
        lambda: orphans(cluster, namespace) == [],
        timeout=120,
        message="no orphaned children",
        interval=0.5,
    )
    return time.monotonic() - started


def assert_settled(jobs: dict[str, Any], expected: dict[str, str]) -> None:
    """Succeeded outputs are row-exact; suspended jobs hold no worker and a checkpoint."""
    for name, phase in expected.items():
        job = jobs[name]
        if phase == "Succeeded":
            assert job.output_ids() == job.source_ids(), f"job {name}: output not row-exact"
        if phase == "Suspended":  # a job that never ran has no Deployment at all
            assert job.replicas() in (0, None), f"job {name}: its worker is scaled up"
            assert job.pods() == [], f"job {name}: a worker pod is left"


def label_all(cluster, namespace: str, names: list[str], fleet: str) -> None:
    cluster.kubectl(
        "label", "cjob", "-n", namespace, *names, f"{FLEET_LABEL}={fleet}", "--overwrite"
    )


def patch_fleet(cluster, namespace: str, fleet: str, spec: dict[str, Any]) -> None:
    """The user's tool for bulk operations: `kubectl patch` has no --selector, so
    `kubectl patch $(kubectl get cjob -l SELECTOR -o name) -p ...`, one patch command."""
    names = cluster.kubectl(
        "get", "cjob", "-n", namespace, "-l", f"{FLEET_LABEL}={fleet}", "-o", "name"
    ).stdout.split()
    assert names, f"no CollectJob labelled {FLEET_LABEL}={fleet}"
    cluster.kubectl(
        "patch", "-n", namespace, *names, "--type", "merge", "-p", json.dumps({"spec": spec})
    )


def make_jobs(collectjob, prefix: str, count: int, rows: int, **spec: Any) -> dict[str, Any]:
    return {
        f"{prefix}{i}": collectjob(name=f"{prefix}{i}", rows=rows, **spec) for i in range(count)
    }


def test_operator_sigkilled_at_random_moments_during_mass_operations(
    cluster, operator, collectjob, namespace, worker_watch, wait_for
):
    seed = random.randrange(1 << 30)
    print(f"killer seed {seed}")
    with Killer(operator, MIN_KILLS, seed) as killer:
        # Mass create, every job suspended; then a mass resume, a mass suspend and a mass
        # delete, each a few kills apart.
        jobs = make_jobs(collectjob, "long", 3, LONG_ROWS, suspend=True, throttle=SLOW)
        jobs |= make_jobs(collectjob, "short", 3, SHORT_ROWS, suspend=True)
        jobs |= make_jobs(collectjob, "idle", 2, SHORT_ROWS, suspend=True)
        jobs |= make_jobs(collectjob, "gone", 2, SHORT_ROWS, suspend=True)
        label_all(cluster, namespace, [n for n in jobs if n.startswith(("long", "short"))], "run")
        label_all(cluster, namespace, [n for n in jobs if n.startswith("long")], "long")
        killer.wait_kills(5)
        patch_fleet(cluster, namespace, "run", {"suspend": False})
        killer.wait_kills(10)
        patch_fleet(cluster, namespace, "long", {"suspend": True})
        killer.wait_kills(15)
        cluster.kubectl("delete", "cjob", "-n", namespace, "gone0", "gone1", "--wait=false")
        killer.stop()
    assert killer.kills >= MIN_KILLS
    expected = {
        **{f"long{i}": "Suspended" for i in range(3)},
        **{f"short{i}": "Succeeded" for i in range(3)},
        **{f"idle{i}": "Suspended" for i in range(2)},
    }
    took = converge(cluster, namespace, expected, wait_for)
    print(f"{killer.kills} kills; converged {took:.1f}s after the last restart")
    assert_settled(jobs, expected)

    # Mass resume after all that, unthrottled: every long job finishes, each row exactly once.
    patch_fleet(cluster, namespace, "long", {"suspend": False, "throttle": None})
    expected |= {f"long{i}": "Succeeded" for i in range(3)}
    took = converge(cluster, namespace, expected, wait_for)
    print(f"mass resume after the kills: every job Succeeded {took:.1f}s after the patch")
    assert_settled(jobs, expected)


def test_apiserver_and_etcd_restarted_mid_run(
    cluster, operator, collectjob, namespace, worker_watch, wait_for
):
    plane = ControlPlane()
    jobs = {
        "run0": collectjob(name="run0", rows=LONG_ROWS, throttle=SLOW),
        "run1": collectjob(name="run1", rows=LONG_ROWS, throttle=STEADY),
    }
    jobs |= make_jobs(collectjob, "held", 2, SHORT_ROWS, suspend=True)
    label_all(cluster, namespace, ["run0"], "pause")
    label_all(cluster, namespace, ["held0"], "wake")
    wait_for(
        lambda: all(
            j.status().get("rowsProcessed", 0) > 0 for n, j in jobs.items() if n.startswith("run")
        ),
        timeout=180,
        message="both running jobs' first committed chunk",
    )

    started = time.monotonic()
    plane.restart_apiserver()
    patch_fleet(cluster, namespace, "pause", {"suspend": True})
    plane.restart_etcd()
    patch_fleet(cluster, namespace, "wake", {"suspend": False})
    expected = {
        "run0": "Suspended",
        "run1": "Succeeded",
        "held0": "Succeeded",
        "held1": "Suspended",
    }
    took = converge(cluster, namespace, expected, wait_for)
    print(f"restarts done in {time.monotonic() - started - took:.1f}s; converged {took:.1f}s later")
    assert_settled(jobs, expected)


def node_ready(core_api: client.CoreV1Api) -> bool:
    conditions = core_api.read_node(NODE_NAME).status.conditions or ()
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def test_node_agent_killed_jobs_resume_from_their_checkpoints_once_the_node_is_back(
    cluster, operator, collectjob, namespace, core_api, worker_watch, wait_for
):
    """The node dies with its pods (agent and worker processes SIGKILLed). One job keeps its
    pod, which the node starts afresh when it is back; the other's pod is force-deleted
    while the node is NotReady (what the taint manager's eviction plus an administrator do
    for a lost node), so its ReplicaSet makes a replacement that waits for a node.

    Fencing: a worker takes a checkpoint over by bumping its epoch with a write conditional
    on the ConfigMap's resourceVersion, and every later write of an older holder conflicts
    and stops it (collectjob_worker.pipeline). So even a worker that survived unseen could
    not commit after its successor started; this test also samples the machine's processes
    to check that no two worker processes of one job were ever alive at once.
    """
    plane = ControlPlane()
    jobs = make_jobs(collectjob, "node", 2, LONG_ROWS, throttle=STEADY)
    evicted = jobs["node1"]
    with CheckpointHistory(core_api, namespace) as history, WorkerProcesses(namespace) as procs:
        wait_for(
            lambda: all(j.status().get("rowsProcessed", 0) > 0 for j in jobs.values()),
            timeout=180,
            message="both jobs' first committed chunk",
        )
        before = {name: job.checkpoint() for name, job in jobs.items()}
        lost_pod = evicted.running_pod()
        assert lost_pod is not None
        assert set(procs.groups()) == set(jobs), "the workers' processes are not seen"

        started = time.monotonic()
        plane.kill_node()
        wait_for(
            lambda: not node_ready(core_api),
            timeout=180,
            message="the node lifecycle controller to mark the node NotReady",
        )
        not_ready = time.monotonic() - started
        assert procs.groups() == {}, "a worker process outlived its node"
        evicted.kubectl(
            "delete", "pod", lost_pod["metadata"]["name"], "--force", "--grace-period=0"
        )
        wait_for(
            lambda: [
                p for p in evicted.pods() if p["metadata"]["name"] != lost_pod["metadata"]["name"]
            ],
            timeout=60,
            message="a replacement pod for the evicted worker",
        )
        restarted = time.monotonic()
        plane.start_node()
        back = time.monotonic() - restarted
        expected = {"node0": "Succeeded", "node1": "Succeeded"}
        took = converge(cluster, namespace, expected, wait_for, timeout=300)
        print(
            f"node NotReady {not_ready:.1f}s after the kill, Ready {back:.1f}s after its "
            f"restart; both jobs Succeeded {took:.1f}s later"
        )
    assert_settled(jobs, expected)
    assert procs.violations == [], "a job had two worker processes at once"
    for name in jobs:
        versions = history.versions[name]
        rows = [r for _, _, r in versions]
        assert rows == sorted(rows), f"job {name}: its checkpoint went back: {versions}"
        epochs = [e for e, _, _ in versions]
        assert epochs == sorted(epochs), f"job {name}: an older holder wrote last: {versions}"
        after = [v for v in versions if v[0] > before[name].epoch]
        assert after, f"job {name}: no worker took the checkpoint over after the node came back"
        assert after[0][2] >= before[name].rows_processed, f"job {name} did not resume: {versions}"
    assert evicted.checkpoint().holder != lost_pod["metadata"]["name"]


def test_children_deleted_or_edited_by_hand_are_repaired_within_seconds(
    cluster, operator, collectjob, namespace, wait_for
):
    job = collectjob(rows=LONG_ROWS, throttle=SLOW)
    wait_for(
        lambda: job.status().get("rowsProcessed", 0) > 0,
        timeout=120,
        message="the first committed chunk",
    )
    job.patch({"suspend": True})
    wait_for(lambda: job.phase() == "Suspended", timeout=120, message="phase Suspended")
    name = f"{job.name}-worker"

    def get(kind: str, obj: str) -> dict[str, Any] | None:
        result = job.kubectl("get", kind, obj, "-o", "json", check=False)
        return dict(json.loads(result.stdout)) if result.returncode == 0 else None

    for kind, obj in (
        ("role", name),
        ("rolebinding", name),
        ("serviceaccount", name),
        ("deployment", name),
        ("configmap", f"{job.name}-checkpoint"),
    ):
        before = get(kind, obj)
        assert before is not None
        job.kubectl("delete", kind, obj, "--wait=true")
        started = time.monotonic()
        wait_for(
            lambda k=kind, o=obj, b=before: (
                (get(k, o) or b)["metadata"]["uid"] != b["metadata"]["uid"]
            ),
            timeout=30,
            message=f"{kind} {obj} recreated",
        )
        print(f"{kind} recreated in {time.monotonic() - started:.2f}s")

    rules = get("role", name)["rules"]  # type: ignore[index]
    wide = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]
    job.kubectl("patch", "role", name, "--type", "merge", "-p", json.dumps({"rules": wide}))
    wait_for(
        lambda: get("role", name)["rules"] == rules,
        timeout=30,  # type: ignore[index]
        message="the Role's rules restored",
    )
    assert job.phase() == "Suspended" and job.replicas() == 0


@pytest.mark.parametrize("count", [10])
def test_bulk_patch_by_label_selector_suspends_every_running_job(
    cluster, operator, collectjob, namespace, apps_api, worker_watch, wait_for, count
):
    # No resource requests: the default (250m CPU each) fits only 8 workers on this 2-core
    # node, and the test needs all of them running at once.
    jobs = make_jobs(collectjob, "bulk", count, LONG_ROWS, throttle=SLOW, worker={"resources": {}})
    label_all(cluster, namespace, [*jobs], "bulk")
    wait_for(
        lambda: all(j.status().get("rowsProcessed", 0) > 0 for j in jobs.values()),
        timeout=240,
        message="every job's first committed chunk",
    )

    started = time.monotonic()
    patch_fleet(cluster, namespace, "bulk", {"suspend": True})

    def all_scaled_down() -> bool:
        deployments = apps_api.list_namespaced_deployment(namespace, label_selector=JOB_LABEL)
        return len(deployments.items) == count and all(
            d.spec.replicas == 0 for d in deployments.items
        )

    scaled = wait_for(
        lambda: all_scaled_down() and time.monotonic(),
        timeout=60,
        message="every worker scaled to 0",
        interval=0.05,
    )
    expected = {name: "Suspended" for name in jobs}
    took = converge(cluster, namespace, expected, wait_for, timeout=120)
    print(
        f"{count} jobs: patch -> all scaled to 0 {scaled - started:.1f}s, "
        f"-> all Suspended {time.monotonic() - started:.1f}s ({took:.1f}s after scale-down)"
    )
    assert_settled(jobs, expected)
    for name, job in jobs.items():
        status, checkpoint = job.status(), job.checkpoint()
        assert status["rowsProcessed"] == checkpoint.rows_processed > 0, name


class SilencingProxy:
    """A TCP proxy on loopback in front of kube-apiserver (TLS passes through untouched).
    `silence()` makes every connection open at that moment stop delivering anything in
    either direction while staying open: a watch that silently dies, as behind a broken
    NAT or load balancer. Connections opened later work normally."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._opened = 0
        self._silenced_below = 0
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def silence(self) -> None:
        self._silenced_below = self._opened

    def close(self) -> None:
        self._closed.set()
        for sock in [self._listener, *self._sockets]:
            sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream), timeout=10)
            upstream.settimeout(None)
            self._sockets += [downstream, upstream]
            number = self._opened
            self._opened += 1
            for src, dst in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(number, src, dst), daemon=True).start()

    def _pump(self, number: int, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if number >= self._silenced_below:
                    dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def test_watches_that_silently_stop_delivering_are_noticed(
    cluster, collectjob, namespace, crd, tmp_path, wait_for
):
    """The watch timeouts (settings.WATCH_CLIENT_TIMEOUT) and the request timeout of every
    API call make the operator drop dead connections and connect again on its own."""
    plane = ControlPlane()
    proxy = SilencingProxy(int(urlsplit(plane.server).port or 443))
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    kubeconfig = tmp_path / "through-proxy.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    via_proxy = SimpleNamespace(kubeconfig=kubeconfig)
    operator = OperatorProcess(via_proxy, namespace, tmp_path / "operator.log", wait_for)
    try:
        operator.start()
        job = collectjob(rows=LONG_ROWS, suspend=True, throttle=SLOW)
        wait_for(lambda: job.phase() == "Suspended", timeout=60, message="phase Suspended")
        proxy.silence()
        started = time.monotonic()
        job.patch({"suspend": False})
        wait_for(
            lambda: job.replicas() == 1,
            timeout=WATCH_CLIENT_TIMEOUT + 60,
            message="the resume seen through a fresh watch",
        )
        print(f"resume applied {time.monotonic() - started:.1f}s after the watches went silent")
        wait_for(lambda: job.phase() == "Running", timeout=120, message="phase Running")
    finally:
        operator.stop()
        proxy.close()
        print(f"--- operator log ---\n{operator.log()[-5000:]}")
