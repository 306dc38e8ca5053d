"""Fixtures for the operator's tests on the real local cluster.

`operator` runs `collectjob-operator` as a local process, scoped to the test's namespace
and handed the local kubeconfig explicitly. `collectjob` writes a small CSV into the test's
temp dir and applies a CollectJob reading it with file://; its worker runs in a container
that mounts the temp dir at its own path (storage_fixtures.py), so the path is its too.
Set CJ_OPERATOR_DEBUG=1 to run the operator with debug logging; its log is printed when a
test fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from collectjob_api.checkpoint import Checkpoint
from collectjob_api.contract import CHECKPOINT_KEY, ENV_URL_ALLOWLIST, MIN_CHUNK_BYTES
from localcluster.client import Cluster
from localcluster.controlplane import free_port
from localcluster.paths import REPO_ROOT as ROOT
from storage_fixtures import DataVolume

CRDS = ROOT / "crds"
OPERATOR_BIN = Path(sys.executable).parent / "collectjob-operator"
JOB_LABEL = "collect.dev/job"


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> None:
    """The CRD with its admission policy, as `kubectl apply -k crds/` installs them: the
    operator starts no worker without the policy."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(CRDS))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/collectjobs.collect.dev"
    )


@pytest.fixture(scope="session")
def apps_api(cluster: Cluster) -> client.AppsV1Api:
    return client.AppsV1Api(cluster.api_client())


class OperatorProcess:
    """The operator as a local process; can be killed and started again mid-test."""

    def __init__(self, cluster: Cluster, namespace: str, log_path: Path, wait_for) -> None:
        self.namespace = namespace
        self.log_path = log_path
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self._cluster = cluster
        self._wait_for = wait_for
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> None:
        """Start the operator; with `wait`, return once its /healthz answers."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        env["KUBECONFIG"] = str(self._cluster.kubeconfig)
        # The tests serve sources on loopback, which workers refuse unless allowlisted.
        env[ENV_URL_ALLOWLIST] = "127.0.0.1"
        argv = [
            str(OPERATOR_BIN),
            "--namespace",
            self.namespace,
            "--listen-host",
            "127.0.0.1",
            "--metrics-port",
            str(self.metrics_port),
            "--liveness-port",
            str(self.liveness_port),
            *(["-v"] if os.environ.get("CJ_OPERATOR_DEBUG") else []),
        ]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_until_healthy()

    def wait_until_healthy(self) -> None:
        """Fails the test (after stopping the process: nothing is left running) when the
        operator does not answer /healthz in time."""
        try:
            self._wait_for(self._healthy, timeout=120, message="the operator's /healthz")
        except BaseException:
            self.stop()
            raise

    def _healthy(self) -> bool:
        assert self._proc is not None and self._proc.poll() is None, self.log()
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crashed or evicted operator."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(timeout=10)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def operator(
    cluster: Cluster, namespace: str, crd: None, tmp_path: Path, wait_for
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(cluster, namespace, tmp_path / "operator.log", wait_for)
    proc.start()
    yield proc
    proc.stop()
    print(f"--- operator log ({proc.log_path}) ---\n{proc.log()[-20000:]}")


def write_csv(path: Path, rows: int) -> Path:
    """A deterministic CSV with quoted fields: `id,name,amount`."""
    with path.open("w", newline="") as f:
        f.write("id,name,amount\n")
        for i in range(rows):
            f.write(f'{i:07d},"name, {i}",{i * 1.5}\n')
    return path


@dataclass
class JobHandle:
    """One CollectJob under test, driven through the real kubectl."""

    cluster: Cluster
    namespace: str
    name: str
    source: Path
    sink: Path
    rows: int

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, "-n", self.namespace, check=check)

    def get(self) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", "cjob", self.name, "-o", "json").stdout))

    def status(self) -> dict[str, Any]:
        return dict(self.get().get("status") or {})

    def phase(self) -> str | None:
        return self.status().get("phase")

    def patch(self, spec: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.kubectl(
            "patch",
            "cjob",
            self.name,
            "--type",
            "merge",
            "-p",
            json.dumps({"spec": spec}),
            check=check,
        )

    def pods(self) -> list[dict[str, Any]]:
        out = self.kubectl("get", "pods", "-l", f"{JOB_LABEL}={self.name}", "-o", "json").stdout
        return list(json.loads(out)["items"])

    def running_pod(self) -> dict[str, Any] | None:
        return next(
            (
                p
                for p in self.pods()
                if p["status"].get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")
            ),
            None,
        )

    def deployment(self) -> dict[str, Any] | None:
        result = self.kubectl("get", "deployment", f"{self.name}-worker", "-o", "json", check=False)
        return dict(json.loads(result.stdout)) if result.returncode == 0 else None

    def replicas(self) -> int | None:
        dep = self.deployment()
        return None if dep is None else int(dep["spec"]["replicas"])

    def events(self) -> list[str]:
        out = self.kubectl(
            "get",
            "events",
            "--field-selector",
            f"involvedObject.name={self.name},involvedObject.kind=CollectJob",
            "-o",
            "json",
        ).stdout
        return [e["reason"] for e in json.loads(out)["items"]]

    def checkpoint(self) -> Checkpoint:
        cm = self.kubectl("get", "configmap", f"{self.name}-checkpoint", "-o", "json").stdout
        return Checkpoint.from_json(json.loads(cm)["data"][CHECKPOINT_KEY])

    def parts(self) -> list[Path]:
        return sorted(self.sink.glob("part-*"))

    def output_ids(self) -> list[str]:
        """The `id` of every row in the jsonl parts, in part order."""
        ids = []
        for part in self.parts():
            ids += [json.loads(line)["id"] for line in part.read_text().splitlines() if line]
        return ids

    def source_ids(self) -> list[str]:
        return [f"{i:07d}" for i in range(self.rows)]


@pytest.fixture
def collectjob(
    cluster: Cluster, namespace: str, crd: None, tmp_path: Path, data_volume: DataVolume
) -> Callable[..., JobHandle]:
    """Apply a CollectJob over a fresh CSV of `rows` rows; `spec` overrides the spec, and
    the worker mounts the test's temp dir whatever `spec` says of the worker."""

    def make(
        name: str = "orders", rows: int = 2000, base: dict[str, Any] | None = None, **spec: Any
    ) -> JobHandle:
        """`base` is a manifest to start from (a sample). Source and sink are temp files
        unless `spec` names them."""
        data = tmp_path / name
        data.mkdir()
        source = write_csv(data / "input.csv", rows)
        sink = data / "out"
        body = base or {
            "apiVersion": "collect.dev/v1alpha1",
            "kind": "CollectJob",
            "spec": {"sink": {"format": "jsonl"}, "chunkBytes": MIN_CHUNK_BYTES},
        }
        body["metadata"] = {"name": name, "namespace": namespace}
        body["spec"] = {**body["spec"], **spec}
        body["spec"]["worker"] = data_volume.into(body["spec"].get("worker"))
        for key, url in (("source", f"file://{source}"), ("sink", f"file://{sink}")):
            body["spec"][key] = {"url": url, **body["spec"].get(key, {})}
            if key not in spec:  # a sample's own URLs point at its machine: use the temp files
                body["spec"][key]["url"] = url
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
        return JobHandle(cluster, namespace, name, source, sink, rows)

    return make
