"""etcd growth from one hostile job (`make bench`), on the real local cluster.

A hostile job makes every checkpoint write as large and as frequent as it can: a header just
under MAX_HEADER_BYTES (every write stores it again) and chunks of 1 KiB. A real
`collectjob-worker run` processes it against its checkpoint ConfigMap for WINDOW_SECONDS
while etcd's own counters are read before and after:

- etcd_debugging_mvcc_total_put_size_in_bytes: bytes of every key-value written (what the
  job makes etcd store until compaction): the figure the target is about, per minute;
- etcd_mvcc_db_total_size_in_bytes: the database file, which grows in steps;
- the number of checkpoint commits, for the rate behind it.

For comparison, in the same run, the attack of issue 8 (a 900 KB header), which now fails
at once with an error naming MAX_HEADER_BYTES. The target (under 10 MB a minute) is printed
as pass/miss; only the worker's behaviour is asserted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from kubernetes import client

from collectjob_api.checkpoint import MAX_HEADER_BYTES, Checkpoint
from collectjob_api.contract import (
    CHECKPOINT_KEY,
    ENV_CHECKPOINT_CONFIGMAP,
    ENV_CONFIG,
    ENV_JOB_NAME,
    ENV_NAMESPACE,
    ENV_POD_NAME,
    SinkConfig,
    SourceConfig,
    WorkerConfig,
    checkpoint_configmap_name,
)
from localcluster.controlplane import free_port

WINDOW_SECONDS = 60.0
TARGET_BYTES_PER_MINUTE = 10_000_000
COLUMNS = 100


def _etcd(cluster) -> dict[str, float]:
    port = json.loads((cluster.paths.run / "state.json").read_text())["ports"]["etcd_client"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = (
        "etcd_debugging_mvcc_total_put_size_in_bytes",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_mvcc_put_total",
    )
    return {
        name: float(re.search(rf"^{name} (\S+)$", text, re.M)[1])  # type: ignore[index]
        for name in wanted
    }


def _hostile_source(path: Path, name_bytes: int, rows: int) -> Path:
    """COLUMNS columns whose names together take `name_bytes`; tiny rows."""
    width = name_bytes // COLUMNS
    names = [f"c{i:03d}".ljust(width, "x") for i in range(COLUMNS)]
    row = ",".join(["1"] * COLUMNS) + "\n"
    with path.open("w") as f:
        f.write(",".join(names) + "\n")
        f.writelines(row for _ in range(rows))
    return path


def _start(cluster, core_api, namespace: str, job: str, source: Path, sink: Path, log: Path):
    name = checkpoint_configmap_name(job)
    core_api.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={})
    )
    config = WorkerConfig(
        SourceConfig(f"file://{source}"),
        SinkConfig(f"file://{sink}"),
        chunk_bytes=1024,
        metrics_port=free_port(),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(
        {
            "KUBECONFIG": str(cluster.kubeconfig),
            ENV_JOB_NAME: job,
            ENV_NAMESPACE: namespace,
            ENV_POD_NAME: f"{job}-worker-bench",
            ENV_CHECKPOINT_CONFIGMAP: name,
            ENV_CONFIG: config.to_json(),
        }
    )
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "collectjob_worker", "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, name


def _checkpoint(core_api, namespace: str, name: str) -> Checkpoint:
    data = core_api.read_namespaced_config_map(name, namespace).data or {}
    return Checkpoint.from_json(data[CHECKPOINT_KEY]) if CHECKPOINT_KEY in data else Checkpoint()


def test_etcd_growth_from_a_hostile_job(cluster, core_api, namespace, tmp_path, wait_for):
    source = _hostile_source(tmp_path / "wide.csv", MAX_HEADER_BYTES - 8 * COLUMNS, 50_000)
    proc, name = _start(
        cluster, core_api, namespace, "hostile", source, tmp_path / "sink", tmp_path / "w.log"
    )
    try:
        wait_for(
            lambda: _checkpoint(core_api, namespace, name).chunk_index > 0,
            timeout=60,
            message="the hostile worker's first commit",
        )
        before, commits_before, started = _etcd(cluster), None, time.monotonic()
        commits_before = _checkpoint(core_api, namespace, name).chunk_index
        wait_for(
            lambda: time.monotonic() - started >= WINDOW_SECONDS or proc.poll() is not None,
            timeout=WINDOW_SECONDS + 30,
            message="the measurement window",
        )
        after, elapsed = _etcd(cluster), time.monotonic() - started
        commits = _checkpoint(core_api, namespace, name).chunk_index - commits_before
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    stored = len(core_api.read_namespaced_config_map(name, namespace).data[CHECKPOINT_KEY])

    old_attack = _hostile_source(tmp_path / "old.csv", 900_000, 100)
    old, old_name = _start(
        cluster,
        core_api,
        namespace,
        "old-attack",
        old_attack,
        tmp_path / "old-sink",
        tmp_path / "old.log",
    )
    old_before = _etcd(cluster)
    assert old.wait(120) == 2, (tmp_path / "old.log").read_text()
    old_after = _etcd(cluster)
    error = _checkpoint(core_api, namespace, old_name).error

    per_minute = 60 / elapsed
    put = (
        after["etcd_debugging_mvcc_total_put_size_in_bytes"]
        - before["etcd_debugging_mvcc_total_put_size_in_bytes"]
    ) * per_minute
    db = (
        after["etcd_mvcc_db_total_size_in_bytes"] - before["etcd_mvcc_db_total_size_in_bytes"]
    ) * per_minute
    old_put = (
        old_after["etcd_debugging_mvcc_total_put_size_in_bytes"]
        - old_before["etcd_debugging_mvcc_total_put_size_in_bytes"]
    )
    verdict = "pass" if put < TARGET_BYTES_PER_MINUTE else "MISS"
    print(
        f"\nhostile job: header {MAX_HEADER_BYTES - 8 * COLUMNS} B in {COLUMNS} columns, "
        f"chunkBytes 1024, checkpoint {stored} B, {commits} commits in {elapsed:.0f}s "
        f"({commits / elapsed:.1f}/s)\n"
        f"  etcd put bytes: {put / 1e6:.2f} MB/min (target < 10 MB/min: {verdict}); "
        f"db file: {db / 1e6:.2f} MB/min; puts: "
        f"{(after['etcd_mvcc_put_total'] - before['etcd_mvcc_put_total']) * per_minute:.0f}/min\n"
        f"issue 8's attack (900 KB header): exit 2 at once, {old_put / 1e3:.1f} kB put; "
        f"error: {error[:120]}"
    )
    assert commits > 0 and "MAX_HEADER_BYTES" in error
