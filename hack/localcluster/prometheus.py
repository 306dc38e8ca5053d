"""A real Prometheus (Debian's package) on loopback, for checking the dashboard and the alerts.

The server gets a temporary config and storage directory, listens on 127.0.0.1 on a free port
and dies with the process that started it (PR_SET_PDEATHSIG), so a killed test session
cannot leave it running. The config builders are pure functions: the worker scrape job and its
targets are derived from the PodMonitor in deploy/monitoring, so the test scrapes exactly
what the Prometheus Operator would.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from localcluster.controlplane import free_port, wait_until
from localcluster.pidfile import process_exited

INSTALL_SCRIPT = "hack/install-prometheus.sh"
PR_SET_PDEATHSIG = 1

Json = Mapping[str, Any]


@dataclass(frozen=True)
class Sample:
    """One series of an instant query's answer."""

    labels: Mapping[str, str]
    value: float


def static_scrape_config(job: str, targets: Sequence[str], interval: str) -> dict[str, Any]:
    """A scrape job for fixed `host:port` targets; the exporter's labels win (honor_labels),
    as they do under the ServiceMonitor, because per-job series carry their own `namespace`."""
    return {
        "job_name": job,
        "scrape_interval": interval,
        "honor_labels": True,
        "static_configs": [{"targets": list(targets)}],
    }


def pod_monitor_scrape_config(
    pod_monitor: Json, targets_file: Path, interval: str
) -> dict[str, Any]:
    """The scrape job of `pod_monitor`, its targets read from `targets_file`.

    Debian's Prometheus is built without Kubernetes service discovery, so the discovery
    itself is `pod_monitor_targets`, written to the file that Prometheus watches.
    """
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    return {
        "job_name": f"podMonitor/{pod_monitor['metadata']['name']}",
        "scrape_interval": interval,
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "metrics_path": endpoint.get("path", "/metrics"),
        "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": interval}],
    }


def pod_monitor_targets(pod_monitor: Json, pods: Sequence[Json]) -> list[dict[str, Any]]:
    """The targets the Prometheus Operator's discovery finds for `pod_monitor` among `pods`
    (API JSON): pods matching its labels that have an IP and have not finished, on the
    container port the endpoint names, labelled with their namespace and pod name."""
    spec = pod_monitor["spec"]
    wanted = spec["selector"]["matchLabels"].items()
    (endpoint,) = spec["podMetricsEndpoints"]
    groups = []
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        if not wanted <= (meta.get("labels") or {}).items() or not status.get("podIP"):
            continue
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        ports = [
            p["containerPort"]
            for c in pod["spec"]["containers"]
            for p in c.get("ports") or ()
            if p.get("name") == endpoint["port"]
        ]
        groups += [
            {
                "targets": [f"{status['podIP']}:{port}"],
                "labels": {"namespace": meta["namespace"], "pod": meta["name"]},
            }
            for port in ports
        ]
    return groups


def write_targets(targets_file: Path, groups: Sequence[Json]) -> None:
    """Replace a file_sd targets file atomically, so Prometheus never reads half of it."""
    partial_file = targets_file.with_suffix(".tmp")
    partial_file.write_text(json.dumps(list(groups)))
    partial_file.replace(targets_file)


def prometheus_config(
    scrape_configs: Sequence[Json], rule_files: Sequence[Path], interval: str
) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(f) for f in rule_files],
        "scrape_configs": list(scrape_configs),
    }


class PrometheusError(RuntimeError):
    pass


class LocalPrometheus:
    """One Prometheus process; `configure` rewrites its config and reloads it in place."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.config_file = workdir / "prometheus.yml"
        self.log_file = workdir / "prometheus.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, config: Json) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise PrometheusError(f"prometheus is not installed: run `bash {INSTALL_SCRIPT}`")
        self.config_file.write_text(yaml.safe_dump(dict(config)))
        self.port = free_port()
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                    "--storage.tsdb.retention.time=1d",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        wait_until(self._ready, 60, f"Prometheus on {self.url} to be ready (log: {self.log_file})")

    def _ready(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise PrometheusError(f"prometheus exited {self._proc.returncode}; see {self.log_file}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def configure(self, config: Json) -> None:
        """Replace the whole config (scrape jobs, rule files) and make the server load it."""
        self.config_file.write_text(yaml.safe_dump(dict(config)))
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30):
                pass
        except urllib.error.HTTPError as e:
            raise PrometheusError(f"reloading {self.config_file}: {e.read().decode()}") from e

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        wait_until(partial(process_exited, proc.pid), 10, "prometheus to exit")

    def _api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=30) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read())
        if body.get("status") != "success":
            raise PrometheusError(f"/api/v1/{path} {dict(params or {})}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[Sample]:
        """An instant query; a scalar answer comes back as one sample without labels."""
        data = self._api("query", {"query": expr})
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr!r} returned a {data['resultType']}, not a vector")
        return [Sample(r["metric"], float(r["value"][1])) for r in data["result"]]

    def active_targets(self) -> list[dict[str, Any]]:
        return list(self._api("targets", {"state": "active"})["activeTargets"])

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self._api("rules")["groups"])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the process that started it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
