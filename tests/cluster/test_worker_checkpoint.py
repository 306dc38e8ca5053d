"""The worker's checkpoint in a real ConfigMap on the local control plane.

Conditional updates on resourceVersion, fencing of a second worker, a write whose response
was lost, `collectjob-worker run` end to end (done means done, then idle until SIGTERM;
permanent errors recorded), and a worker that rides out an API server outage without losing
or repeating anything.
The outage is made by a TCP relay between the worker and the shared API server, so that
other tests using the same control plane are not disturbed.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import http.server
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from urllib3.exceptions import ProtocolError

from collectjob_api.checkpoint import Checkpoint
from collectjob_api.contract import (
    CHECKPOINT_KEY,
    ENV_CHECKPOINT_CONFIGMAP,
    ENV_CONFIG,
    ENV_JOB_NAME,
    ENV_NAMESPACE,
    ENV_POD_IP,
    ENV_POD_NAME,
    ENV_URL_ALLOWLIST,
    EXIT_PERMANENT_ERROR,
    SinkConfig,
    SourceConfig,
    WorkerConfig,
    checkpoint_configmap_name,
)
from collectjob_worker.checkpoint_store import ConfigMapCheckpointStore
from collectjob_worker.dialect import Dialect
from collectjob_worker.errors import CheckpointConflict, WorkerError
from collectjob_worker.metrics import WorkerMetrics
from collectjob_worker.pipeline import Job, Outcome, Pipeline
from collectjob_worker.retry import Backoff
from collectjob_worker.sinks import open_sink
from collectjob_worker.sources import open_source
from localcluster.controlplane import ControlPlane, free_port

RUN = [sys.executable, "-m", "collectjob_worker", "run"]


def _configmap(core_api: client.CoreV1Api, namespace: str, job: str) -> str:
    name = checkpoint_configmap_name(job)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={})
    core_api.create_namespaced_config_map(namespace, body)
    return name


def _stored(core_api: client.CoreV1Api, namespace: str, name: str) -> Checkpoint:
    data = core_api.read_namespaced_config_map(name, namespace).data or {}
    return Checkpoint.from_json(data[CHECKPOINT_KEY]) if CHECKPOINT_KEY in data else Checkpoint()


def _source_csv(path: Path, rows: int) -> tuple[Path, list[list[str]]]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "name", "note"])
    for i in range(rows):
        writer.writerow([f"{i:07d}", f"name, {i}", 'say "hi"\nbye' if i % 7 == 0 else "NA"])
    path.write_text(out.getvalue())
    return path, list(csv.reader(io.StringIO(out.getvalue(), newline="")))[1:]


def _output(sink: Path) -> list[list[str]]:
    rows: list[list[str]] = []
    for part in sorted(sink.glob("part-*.csv")):
        rows += list(csv.reader(io.StringIO(part.read_bytes().decode(), newline="")))[1:]
    return rows


def test_updates_are_conditional_on_the_resource_version(core_api, namespace) -> None:
    name = _configmap(core_api, namespace, "cond")
    store = ConfigMapCheckpointStore(core_api, namespace, name)
    first = store.load()
    assert first.checkpoint == Checkpoint() and first.version

    version = store.save(Checkpoint(offset=10, holder="a", epoch=1), first.version)
    assert version != first.version
    assert store.load().checkpoint == Checkpoint(offset=10, holder="a", epoch=1)
    assert _stored(core_api, namespace, name).offset == 10

    with pytest.raises(
        CheckpointConflict, match=f"ConfigMap {namespace}/{name} .* \\(a, epoch 1\\)"
    ):
        store.save(Checkpoint(offset=99, holder="b", epoch=1), first.version)
    assert store.load().checkpoint.offset == 10


def test_a_change_beside_the_checkpoint_is_no_takeover(core_api, namespace) -> None:
    """An annotation edited between two writes changes only the resourceVersion: the write is
    made again on the new one. A changed checkpoint (another worker's) still conflicts."""
    name = _configmap(core_api, namespace, "beside")
    store = ConfigMapCheckpointStore(core_api, namespace, name)
    version = store.save(Checkpoint(offset=1, holder="a", epoch=1), store.load().version)
    core_api.patch_namespaced_config_map(name, namespace, {"metadata": {"annotations": {"x": "1"}}})
    newer = store.save(Checkpoint(offset=2, holder="a", epoch=1), version)
    assert newer != version and _stored(core_api, namespace, name).offset == 2

    other = ConfigMapCheckpointStore(core_api, namespace, name)
    other.save(Checkpoint(offset=2, holder="b", epoch=2), other.load().version)
    with pytest.raises(CheckpointConflict, match=r"\(b, epoch 2\)"):
        store.save(Checkpoint(offset=3, holder="a", epoch=1), newer)
    assert _stored(core_api, namespace, name).holder == "b"


def test_the_patch_keeps_what_the_operator_set(core_api, namespace) -> None:
    name = _configmap(core_api, namespace, "labels")
    core_api.patch_namespaced_config_map(
        name, namespace, {"metadata": {"labels": {"collect.dev/job": "labels"}}}
    )
    store = ConfigMapCheckpointStore(core_api, namespace, name)
    store.save(Checkpoint(offset=1), store.load().version)
    cm = core_api.read_namespaced_config_map(name, namespace)
    assert cm.metadata.labels == {"collect.dev/job": "labels"}


def test_a_write_whose_response_was_lost_counts_as_ours(core_api, namespace) -> None:
    """The API server applied the patch but the connection broke before the answer came."""
    name = _configmap(core_api, namespace, "lost")

    class LosesFirstResponse:
        def __init__(self) -> None:
            self.calls = 0

        def __getattr__(self, attr: str) -> Any:
            return getattr(core_api, attr)

        def patch_namespaced_config_map(self, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            result = core_api.patch_namespaced_config_map(*args, **kwargs)
            if self.calls == 1:
                raise ProtocolError("connection reset after the request was sent")
            return result

    api = LosesFirstResponse()
    store = ConfigMapCheckpointStore(api, namespace, name, Backoff(initial=0.01, deadline=10))
    wanted = Checkpoint(offset=42, holder="me", epoch=1)
    version = store.save(wanted, store.load().version)
    assert api.calls == 2
    assert store.load().checkpoint == wanted and store.load().version == version


def test_a_missing_configmap_is_reported(core_api, namespace) -> None:
    store = ConfigMapCheckpointStore(core_api, namespace, "nope-checkpoint")
    with pytest.raises(WorkerError, match=f"ConfigMap {namespace}/nope-checkpoint does not exist"):
        store.load()


def test_the_sink_owner_is_the_collectjob_controlling_the_checkpoint(
    cluster, core_api, namespace, collectjob
) -> None:
    """Sinks are claimed with this id (see ownership): the job's UID, read from the
    ConfigMap the worker may read; a ConfigMap without a CollectJob owner gives its own."""
    collectjob("owner")
    job = json.loads(cluster.kubectl("get", "cjob", "owner", "-n", namespace, "-o", "json").stdout)
    owned = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(
            name="owned-checkpoint",
            owner_references=[
                client.V1OwnerReference(
                    api_version="collect.dev/v1alpha1",
                    kind="CollectJob",
                    name="owner",
                    uid=job["metadata"]["uid"],
                    controller=True,
                )
            ],
        ),
        data={},
    )
    core_api.create_namespaced_config_map(namespace, owned)
    store = ConfigMapCheckpointStore(core_api, namespace, "owned-checkpoint")
    assert store.owner_id() == job["metadata"]["uid"]

    plain = _configmap(core_api, namespace, "plain")
    uid = core_api.read_namespaced_config_map(plain, namespace).metadata.uid
    assert ConfigMapCheckpointStore(core_api, namespace, plain).owner_id() == uid


def test_a_second_worker_is_fenced(core_api, namespace, tmp_path) -> None:
    name = _configmap(core_api, namespace, "fence")
    source, expected = _source_csv(tmp_path / "source.csv", 3000)

    def job(holder: str) -> Job:
        store = ConfigMapCheckpointStore(core_api, namespace, name)
        return Job(
            source=open_source(str(source)),
            sink=open_sink(str(tmp_path / "sink"), owner=store.owner_id()),
            sink_format="csv",
            dialect=Dialect(),
            transform=None,
            store=store,
            holder=holder,
            chunk_bytes=8192,
        )

    b_may_start, b_finished = threading.Event(), threading.Event()

    def a_commits(cp: Checkpoint) -> None:
        if cp.chunk_index == 1:
            b_may_start.set()
            assert b_finished.wait(60)

    a = Pipeline(job("worker-a"), WorkerMetrics(namespace, "fence"), threading.Event(), a_commits)
    with ThreadPoolExecutor(1) as pool:
        a_run = pool.submit(a.run)
        assert b_may_start.wait(60)
        b = Pipeline(job("worker-b"), WorkerMetrics(namespace, "fence"), threading.Event())
        assert b.run() is Outcome.DONE
        b_finished.set()
        with pytest.raises(CheckpointConflict, match="worker-b"):
            a_run.result(60)

    stored = _stored(core_api, namespace, name)
    assert stored.done and stored.holder == "worker-b" and stored.epoch == 2
    assert _output(tmp_path / "sink") == expected


class TcpRelay:
    """Forwards loopback TCP connections to the API server; `cut()` makes it unreachable
    (listener closed, open connections reset), `restore()` brings it back on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        assert self._listener is not None
        _shut(self._listener)
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):  # reset, not a polite close
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                _shut(conn)
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self._open |= {downstream, upstream}
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shut(src)
            _shut(dst)


def _shut(conn: socket.socket) -> None:
    """Shut down and close; shutting down first wakes a thread blocked on the socket."""
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    conn.close()


@pytest.fixture
def relay(cluster, tmp_path) -> Iterator[tuple[TcpRelay, Path]]:
    """A relay to the API server and a kubeconfig that goes through it."""
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    server = config["clusters"][0]["cluster"]["server"]
    host, port = server.removeprefix("https://").split(":")
    relay = TcpRelay((host, int(port)))
    relay.restore()
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{relay.port}"
    kubeconfig = tmp_path / "relay.kubeconfig"
    kubeconfig.write_text(json.dumps(config))
    yield relay, kubeconfig
    relay.cut()


def _worker_env(kubeconfig: Path, namespace: str, job: str, config: WorkerConfig) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(
        {
            "KUBECONFIG": str(kubeconfig),
            ENV_JOB_NAME: job,
            ENV_NAMESPACE: namespace,
            ENV_POD_NAME: f"{job}-worker-test",
            ENV_POD_IP: "127.0.0.1",
            ENV_CHECKPOINT_CONFIGMAP: checkpoint_configmap_name(job),
            ENV_CONFIG: config.to_json(),
        }
    )
    return env


def _config(source: Path, sink: Path, chunk_bytes: int = 1 << 20) -> WorkerConfig:
    return WorkerConfig(
        SourceConfig(f"file://{source}"),
        SinkConfig(f"file://{sink}"),
        chunk_bytes=chunk_bytes,
        metrics_port=free_port(),
    )


@contextlib.contextmanager
def _running(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`collectjob-worker run` with its output in `log`; killed if the test leaves it running."""
    with log.open("w") as out:
        proc = subprocess.Popen(RUN, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _stop_when_idle(proc: subprocess.Popen[bytes], log: Path, wait_for, timeout: float) -> None:
    """A done worker stays up (its Deployment would restart it otherwise) until SIGTERM."""
    wait_for(
        lambda: "idle until SIGTERM" in log.read_text() or proc.poll() is not None,
        timeout,
        "the worker to be done and idle",
    )
    assert proc.poll() is None, log.read_text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()


def test_run_processes_the_job_and_then_never_again(
    cluster, core_api, namespace, tmp_path, wait_for
):
    job = "runmode"
    name = _configmap(core_api, namespace, job)
    source, expected = _source_csv(tmp_path / "source.csv", 2000)
    env = _worker_env(cluster.kubeconfig, namespace, job, _config(source, tmp_path / "sink", 8192))

    first = tmp_path / "first.log"
    with _running(env, first) as proc:
        _stop_when_idle(proc, first, wait_for, 120)
    stored = _stored(core_api, namespace, name)
    assert stored.done and stored.rows_processed == 2000 and stored.holder == f"{job}-worker-test"
    assert _output(tmp_path / "sink") == expected
    written = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "sink").iterdir()}

    again = tmp_path / "again.log"
    with _running(env, again) as proc:
        _stop_when_idle(proc, again, wait_for, 60)
    assert "says done; nothing to do" in again.read_text()
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "sink").iterdir()} == written
    assert _stored(core_api, namespace, name) == stored


def test_run_records_a_permanent_error_in_the_configmap(cluster, core_api, namespace, tmp_path):
    job = "broken"
    name = _configmap(core_api, namespace, job)
    config = _config(tmp_path / "missing.csv", tmp_path / "sink")
    env = _worker_env(cluster.kubeconfig, namespace, job, config)
    result = subprocess.run(RUN, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_PERMANENT_ERROR
    error = _stored(core_api, namespace, name).error
    assert error.startswith(f"cannot read source file://{tmp_path}/missing.csv")
    assert error in result.stderr


def test_run_refuses_an_internal_source_unless_allowlisted(
    cluster, core_api, namespace, tmp_path, wait_for
) -> None:
    """The URL policy in the real worker: a loopback HTTP source (standing for an internal
    service) fails the job with a reason naming the rule; allowlisted, the same job runs."""
    (tmp_path / "served").mkdir()
    source, expected = _source_csv(tmp_path / "served" / "source.csv", 500)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=source.parent)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/source.csv?token=s3cr3t"
        config = dataclasses.replace(
            _config(source, tmp_path / "sink", 8192), source=SourceConfig(url)
        )
        name = _configmap(core_api, namespace, "internal")
        env = _worker_env(cluster.kubeconfig, namespace, "internal", config)
        env.pop(ENV_URL_ALLOWLIST, None)
        result = subprocess.run(RUN, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == EXIT_PERMANENT_ERROR, result.stderr
        error = _stored(core_api, namespace, name).error
        assert "a loopback address; internal addresses are refused" in error
        assert "s3cr3t" not in error and "s3cr3t" not in result.stderr

        log = tmp_path / "allowed.log"
        with _running({**env, ENV_URL_ALLOWLIST: "127.0.0.1"}, log) as proc:
            _stop_when_idle(proc, log, wait_for, 120)
        assert _stored(core_api, namespace, name).done
        assert _output(tmp_path / "sink") == expected
    finally:
        server.shutdown()
        server.server_close()


def _run_through_an_outage(
    core_api, namespace: str, tmp_path: Path, kubeconfig: Path, wait_for, outage
) -> tuple[Checkpoint, list[list[str]], str]:
    """Run a worker, call `outage(proc, log)` after 5 commits, let it finish; return the
    stored checkpoint, the expected rows and the worker's log."""
    job = "outage"
    name = _configmap(core_api, namespace, job)
    source, expected = _source_csv(tmp_path / "source.csv", 6000)
    # Throttled (4 KiB chunks, two a second): unthrottled, coalesced commits would finish
    # the file in a few commits, before the outage.
    config = dataclasses.replace(
        _config(source, tmp_path / "sink", 4096), throttle_bytes_per_second=8192
    )
    env = _worker_env(kubeconfig, namespace, job, config)
    log = tmp_path / "worker.log"
    with _running(env, log) as proc:
        wait_for(lambda: _stored(core_api, namespace, name).chunk_index >= 5, 60, "5 commits")
        outage(proc, log)
        _stop_when_idle(proc, log, wait_for, 180)
    assert _output(tmp_path / "sink") == expected
    return _stored(core_api, namespace, name), expected, log.read_text()


def test_run_rides_out_an_api_server_outage(relay, core_api, namespace, tmp_path, wait_for):
    relay_, kubeconfig = relay
    cut_at: list[Checkpoint] = []

    def cut_then_restore(proc, log: Path) -> None:
        relay_.cut()
        cut_at.append(_stored(core_api, namespace, checkpoint_configmap_name("outage")))
        wait_for(lambda: "(attempt 3, retrying" in log.read_text(), 60, "the worker to retry")
        assert proc.poll() is None, log.read_text()
        relay_.restore()

    stored, expected, log = _run_through_an_outage(
        core_api, namespace, tmp_path, kubeconfig, wait_for, cut_then_restore
    )
    assert not cut_at[0].done and stored.done and stored.epoch == 1
    assert stored.rows_processed == len(expected)
    print(f"outage began after chunk {cut_at[0].chunk_index}; worker log:\n{log[-3000:]}")


def test_run_resumes_after_a_real_api_server_restart(
    cluster, core_api, namespace, tmp_path, wait_for
):
    def restart(proc, log: Path) -> None:
        ControlPlane(cluster.paths).restart_apiserver()

    stored, expected, log = _run_through_an_outage(
        core_api, namespace, tmp_path, cluster.kubeconfig, wait_for, restart
    )
    assert "retrying" in log, "the worker never saw the API server go away"
    assert stored.done and stored.rows_processed == len(expected)
