"""A real Prometheus scrapes the real operator and a real worker; every dashboard query and
every alert expression must answer.

The worker reads its CSV from a bandwidth-limited HTTP server on loopback, so it is still
running (and being scraped) while the test suspends and resumes it, which makes the suspend
and resume latency histograms observe real values. A second job fails on a missing source,
and the CollectJobFailed alert must fire for it. Workers are discovered the way the
PodMonitor says: pods listed from the local API server and selected by its labels and port
name (Debian's Prometheus has no Kubernetes discovery built in, so the test writes what it
finds into a file_sd targets file).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml

from localcluster.monitoring import (
    DASHBOARD,
    MONITORING_DIR,
    POD_MONITOR,
    PROMETHEUS_RULE,
    alert_rules,
    as_bool,
    fill_variables,
    load_dashboard,
    load_yaml,
    panel_queries,
    variable_queries,
    write_rules_file,
)
from localcluster.prometheus import (
    LocalPrometheus,
    pod_monitor_scrape_config,
    pod_monitor_targets,
    prometheus_config,
    static_scrape_config,
    write_targets,
)

SCRAPE_INTERVAL = "1s"
# What Grafana would put in for the built-in variables, given 1s scrapes and the last 15m.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__range": "15m", "__interval": "15s"}
SOURCE_ROWS = 400_000
REJECT_EVERY = 50
SOURCE_BYTES_PER_SECOND = 48 * 1024


@dataclass(frozen=True)
class Answer:
    """What one query returned, for the failure message."""

    where: str
    expr: str
    result: str


class SlowCsvHandler(BaseHTTPRequestHandler):
    """GET with Range and HEAD, as the worker's HttpSource uses them, paced to a fixed rate."""

    server: SlowCsvServer

    def do_HEAD(self) -> None:
        self._headers(200, len(self.server.body))
        self.end_headers()

    def do_GET(self) -> None:
        body = self.server.body
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if self.path != "/orders.csv":
            self.send_error(404)
            return
        if not match:
            self._headers(200, len(body))
            self.end_headers()
            self._send_paced(body)
            return
        start = int(match.group(1))
        end = min(int(match.group(2) or len(body) - 1), len(body) - 1)
        if start >= len(body):
            self.send_error(416)
            return
        self._headers(206, end - start + 1)
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
        self.end_headers()
        self._send_paced(body[start : end + 1])

    def _headers(self, status: int, length: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", '"orders-v1"')

    def _send_paced(self, data: bytes) -> None:
        """A slow link: 4 KiB at a time, at SOURCE_BYTES_PER_SECOND; ends early on stop."""
        piece = 4096
        for i in range(0, len(data), piece):
            if self.server.stopping.wait(piece / SOURCE_BYTES_PER_SECOND):
                return
            self.wfile.write(data[i : i + piece])

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: one line per range request would drown the test output."""


class SlowCsvServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, body: bytes) -> None:
        super().__init__(("127.0.0.1", 0), SlowCsvHandler)
        self.body = body
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/orders.csv"


def csv_with_rejects(rows: int) -> bytes:
    """`id,name,amount`; every REJECT_EVERY-th row has a field too many and is rejected."""
    lines = ["id,name,amount"]
    for i in range(rows):
        extra = ",surplus" if i % REJECT_EVERY == REJECT_EVERY - 1 else ""
        lines.append(f'{i:07d},"name, {i}",{i * 1.5}{extra}')
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def slow_source() -> Iterator[SlowCsvServer]:
    server = SlowCsvServer(csv_with_rejects(SOURCE_ROWS))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrometheus]:
    """One Prometheus on loopback for this module, stopped whatever the outcome."""
    server = LocalPrometheus(tmp_path_factory.mktemp("prometheus"))
    server.start(prometheus_config([], [], SCRAPE_INTERVAL))
    yield server
    server.stop()


def answers(prometheus: LocalPrometheus, expr: str) -> str:
    """'' when the query returned at least one number, else what it returned instead."""
    samples = prometheus.query(expr)
    if not samples:
        return "no series"
    if all(math.isnan(s.value) for s in samples):
        return f"only NaN ({len(samples)} series)"
    return ""


def queries_to_check(namespace: str, jobs: list[str]) -> list[tuple[str, str]]:
    values = {**GRAFANA_BUILTINS, "namespace": namespace, "job": "|".join(jobs)}
    dashboard = load_dashboard()
    checks = [
        (f"panel {q.panel!r} ({q.ref_id})", fill_variables(q.expr, values))
        for q in panel_queries(dashboard)
    ]
    checks += [
        (f"variable ${name}", fill_variables(expr, values))
        for name, expr in variable_queries(dashboard).items()
    ]
    checks += [
        (f"alert {rule.name}", as_bool(rule.expr))
        for rule in alert_rules(load_yaml(PROMETHEUS_RULE))
    ]
    return checks


def silent_queries(
    prometheus: LocalPrometheus, checks: list[tuple[str, str]], wait_for: Callable[..., Any]
) -> list[Answer]:
    """Wait (bounded) for every query to answer; the ones that still do not, with why."""
    last: list[Answer] = []

    def all_answer() -> bool:
        last[:] = [
            Answer(where, expr, why) for where, expr in checks if (why := answers(prometheus, expr))
        ]
        return not last

    with contextlib.suppress(pytest.fail.Exception):
        wait_for(all_answer, timeout=60, message="every query to answer")
    return last


def firing(prometheus: LocalPrometheus, alert: str, job: str) -> bool:
    expr = f'ALERTS{{alertname="{alert}", collectjob="{job}", alertstate="firing"}}'
    return bool(prometheus.query(expr))


def test_every_dashboard_query_and_alert_expression_returns_data(
    namespace, core_api, operator, collectjob, prometheus, slow_source, tmp_path, wait_for
):
    # A processor, so the dashboard's processor panels have data too.
    job = collectjob(
        "orders",
        rows=1,
        source={"url": slow_source.url},
        chunkBytes=1 << 20,
        process={"name": "drop-duplicates", "options": {"columns": ["id"]}},
    )
    broken = collectjob("broken", rows=1, source={"url": f"file://{tmp_path}/missing.csv"})
    pod_monitor, targets_file = load_yaml(POD_MONITOR), tmp_path / "workers.json"
    write_targets(targets_file, [])
    prometheus.configure(
        prometheus_config(
            [
                static_scrape_config(
                    "collectjob-operator",
                    [f"127.0.0.1:{operator.metrics_port}"],
                    SCRAPE_INTERVAL,
                ),
                pod_monitor_scrape_config(pod_monitor, targets_file, SCRAPE_INTERVAL),
            ],
            [write_rules_file(tmp_path)],
            SCRAPE_INTERVAL,
        )
    )

    def scraped(expr: str) -> bool:
        """Discover the worker pods as they are now, then ask Prometheus."""
        pods = json.loads(core_api.list_namespaced_pod(namespace, _preload_content=False).data)
        write_targets(targets_file, pod_monitor_targets(pod_monitor, pods["items"]))
        return bool(prometheus.query(expr))

    worker_rows = f'collectjob_worker_rows_processed_total{{namespace="{namespace}"}}'
    wait_for(
        lambda: scraped(f"{worker_rows} > 0"),
        timeout=120,
        message="Prometheus to scrape a worker that has committed rows",
    )
    job.patch({"suspend": True})
    wait_for(lambda: job.phase() == "Suspended", timeout=90, message="phase Suspended")
    job.patch({"suspend": False})
    wait_for(lambda: job.phase() == "Running", timeout=60, message="phase Running again")
    wait_for(lambda: broken.phase() == "Failed", timeout=120, message="the broken job Failed")
    wait_for(
        lambda: scraped("collectjob_resume_latency_seconds_count > 0"),
        timeout=60,
        message="the operator's resume latency to be scraped",
    )
    pod = wait_for(job.running_pod, timeout=60, message="the resumed worker pod")["metadata"]
    resumed_rows = f'collectjob_worker_rows_processed_total{{pod="{pod["name"]}"}}'
    wait_for(
        lambda: scraped(f"increase({resumed_rows}[30s]) > 0"),
        timeout=120,
        message="the resumed worker to be scraped while it commits",
    )

    silent = silent_queries(prometheus, queries_to_check(namespace, ["orders", "broken"]), wait_for)
    assert silent == [], "queries that returned no data:\n" + "\n".join(
        f"- {a.where}: {a.result}\n    {a.expr}" for a in silent
    )
    wait_for(
        lambda: firing(prometheus, "CollectJobFailed", "broken"),
        timeout=60,
        message="CollectJobFailed to fire for the broken job",
    )
    assert not firing(prometheus, "CollectJobFailed", "orders")


def test_kustomize_renders_the_monitoring_objects_and_the_dashboard_configmap(cluster):
    rendered = list(yaml.safe_load_all(cluster.kubectl("kustomize", str(MONITORING_DIR)).stdout))
    kinds = {(o["kind"], o["metadata"]["name"]) for o in rendered}
    assert kinds == {
        ("Service", "collectjob-operator-metrics"),
        ("ServiceMonitor", "collectjob-operator"),
        ("PodMonitor", "collectjob-workers"),
        ("PrometheusRule", "collectjob-alerts"),
        ("ConfigMap", "collectjob-dashboard"),
    }
    assert {o["metadata"]["namespace"] for o in rendered} == {"collectjob-system"}
    (configmap,) = [o for o in rendered if o["kind"] == "ConfigMap"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    raw = DASHBOARD.read_text()
    assert configmap["data"] == {"collectjob.json": raw}
