"""`collectjob-worker local` and `run` as a user meets them: signals, messages, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pyarrow.parquet as pq
import pytest

from collectjob_api.contract import (
    ENV_CHECKPOINT_CONFIGMAP,
    ENV_CONFIG,
    ENV_JOB_NAME,
    ENV_NAMESPACE,
    ENV_POD_NAME,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PERMANENT_ERROR,
    SinkConfig,
    SourceConfig,
    WorkerConfig,
)
from collectjob_worker.cli import main
from collectjob_worker.metrics import WorkerMetrics
from unit.worker.cli_args import local_args as _args


def _chunk_index(tmp_path) -> int:
    try:
        return int(json.loads((tmp_path / "state.json").read_text())["chunk_index"])
    except (FileNotFoundError, ValueError):
        return -1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_suspends_and_rerun_resumes(
    worker_cli, outputs, rows_csv, waiter, tmp_path, sig
) -> None:
    data = rows_csv(6000, seed=11)
    (tmp_path / "source.csv").write_bytes(data)
    proc = worker_cli.start(*_args(tmp_path))
    waiter(lambda: _chunk_index(tmp_path) >= 3 or proc.poll() is not None, 60, "three chunks")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 0, err
    assert "suspended at byte " in err and "run the same command again to resume" in err
    state = json.loads((tmp_path / "state.json").read_text())
    assert not state["done"] and state["offset"] < len(data)
    assert f"byte {state['offset']:,} of {len(data):,}" in err

    rerun = worker_cli.run(*_args(tmp_path, 1 << 20))
    assert rerun.returncode == 0, rerun.stderr
    assert "done:" in rerun.stderr
    expected = outputs.expected(data)
    assert outputs.values(tmp_path / "sink", "csv", expected.header) == expected.rows


def test_a_chunk_that_cannot_finish_in_time_is_abandoned(
    worker_cli, outputs, rows_csv, waiter, tmp_path, http_server
) -> None:
    """SIGTERM while the source hangs: exit 0 within the grace period, nothing half-committed."""
    data = rows_csv(400)
    http_server.payload, http_server.stall_from = data, 4000
    args = [*_args(tmp_path, 1024), "--grace-seconds", "6"]
    args[args.index("--source") + 1] = http_server.url
    proc = worker_cli.start(*args)
    waiter(lambda: http_server.stalled.is_set() or proc.poll() is not None, 60, "a hung read")
    # The pipelined worker reads ahead: it hangs first in a later chunk, then commits every
    # chunk before the hung read (each starts below stall_from and was read whole).
    state = tmp_path / "state.json"
    waiter(
        lambda: json.loads(state.read_text())["offset"] >= 4000 or proc.poll() is not None,
        60,
        "every chunk before the hung read to be committed",
    )
    before = json.loads(state.read_text())
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)

    assert proc.returncode == 0, err
    assert time.monotonic() - started < 6
    assert "abandoning the in-flight chunk (it will be redone)" in err
    assert json.loads((tmp_path / "state.json").read_text()) == before

    http_server.gate.set()
    rerun = worker_cli.run(*args)
    assert rerun.returncode == 0, rerun.stderr
    expected = outputs.expected(data)
    assert outputs.values(tmp_path / "sink", "csv", expected.header) == expected.rows


def test_plain_log_lines_when_not_a_terminal(worker_cli, rows_csv, tmp_path) -> None:
    (tmp_path / "source.csv").write_bytes(rows_csv(200))
    result = worker_cli.run(*_args(tmp_path, 4096))
    assert result.returncode == 0
    assert "chunk 0 committed: byte " in result.stderr and "\r" not in result.stderr


def test_progress_bar_on_a_terminal(worker_cli, rows_csv, tmp_path) -> None:
    (tmp_path / "source.csv").write_bytes(rows_csv(300))
    leader, follower = os.openpty()
    proc = subprocess.Popen(
        worker_cli.command(*_args(tmp_path, 2048)), stderr=follower, stdout=subprocess.DEVNULL
    )
    os.close(follower)
    output = b""
    while True:
        try:
            piece = os.read(leader, 4096)
        except OSError:
            break
        if not piece:
            break
        output += piece
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    text = output.decode()
    assert "\r[" in text and "100.0%" in text and "rows" in text and "ETA" in text


def test_source_changed_exits_with_the_reason(worker_cli, rows_csv, waiter, tmp_path) -> None:
    data = rows_csv(4000)
    (tmp_path / "source.csv").write_bytes(data)
    proc = worker_cli.start(*_args(tmp_path))
    waiter(lambda: _chunk_index(tmp_path) >= 1 or proc.poll() is not None, 60, "a chunk")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    (tmp_path / "source.csv").write_bytes(data.replace(b"name", b"NAME", 1))

    result = worker_cli.run(*_args(tmp_path))
    assert result.returncode == EXIT_PERMANENT_ERROR
    assert "changed since the checkpoint" in result.stderr
    assert (
        "changed since the checkpoint" in json.loads((tmp_path / "state.json").read_text())["error"]
    )


def test_invalid_schema_is_a_permanent_error(worker_cli, rows_csv, tmp_path) -> None:
    (tmp_path / "source.csv").write_bytes(rows_csv(10))
    (tmp_path / "schema.yaml").write_text("columns:\n  - name: id\n    type: int\n")
    result = worker_cli.run(*_args(tmp_path, 1024, "--schema", str(tmp_path / "schema.yaml")))
    assert result.returncode == EXIT_PERMANENT_ERROR
    assert "transform.columns[0].type is 'int'" in result.stderr


def test_schema_header_mismatch_is_recorded(worker_cli, rows_csv, tmp_path) -> None:
    (tmp_path / "source.csv").write_bytes(rows_csv(10))
    (tmp_path / "schema.json").write_text(json.dumps({"columns": [{"name": "missing"}]}))
    result = worker_cli.run(*_args(tmp_path, 1024, "--schema", str(tmp_path / "schema.json")))
    assert result.returncode == EXIT_PERMANENT_ERROR
    assert "missing column(s) 'missing'" in result.stderr
    error = json.loads((tmp_path / "state.json").read_text())["error"]
    assert "header does not match the transform" in error


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_done_run_worker_stays_up_until_signalled(sig) -> None:
    """What `run` does once done: a Deployment restarts a container that exits."""
    code = (
        "import logging, sys\n"
        "from collectjob_worker.cli import idle_until_stopped\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "sys.exit(idle_until_stopped())\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "idle until SIGTERM or SIGINT" in first, first + proc.stderr.read()
        assert proc.poll() is None
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_OK, err
    assert "stopped while idle" in err


def test_a_stopped_worker_exits_at_once_whatever_its_threads_are_doing() -> None:
    """A worker that has committed its stop ends even while a thread is still busy (a read
    ahead inside pyarrow): interpreter finalization would wait for it, and the node would
    kill the worker at the end of its grace period instead."""
    code = (
        "import logging, threading, time\n"
        "from collectjob_worker.cli import exit_now\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "threading.Thread(target=time.sleep, args=(600,)).start()\n"
        "logging.getLogger('w').info('suspended')\n"
        "exit_now(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "suspended" in proc.stderr  # logged before the exit, not lost with it


def test_run_needs_its_identity(monkeypatch, caplog) -> None:
    for key in (ENV_JOB_NAME, ENV_NAMESPACE, ENV_POD_NAME, ENV_CHECKPOINT_CONFIGMAP, ENV_CONFIG):
        monkeypatch.delenv(key, raising=False)
    assert main(["run"]) == EXIT_FAILED
    assert "worker environment is incomplete" in caplog.text


def test_run_never_falls_back_to_the_home_kubeconfig(monkeypatch, caplog, tmp_path) -> None:
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text("this must never be read")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = WorkerConfig(SourceConfig("file:///nonexistent.csv"), SinkConfig("file:///tmp/x"))
    env = {
        ENV_JOB_NAME: "job",
        ENV_NAMESPACE: "ns",
        ENV_POD_NAME: "pod",
        ENV_CHECKPOINT_CONFIGMAP: "job-checkpoint",
        ENV_CONFIG: config.to_json(),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["run"]) == EXIT_FAILED
    assert "no Kubernetes credentials" in caplog.text and "KUBECONFIG is not set" in caplog.text


def test_metrics_are_served_over_http(free_port) -> None:
    metrics = WorkerMetrics("ns", "job")
    metrics.rows.inc(5)
    metrics.serve(free_port, "127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{free_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'collectjob_worker_rows_processed_total{collectjob="job",namespace="ns"} 5.0' in text
    for line in text.splitlines():
        if line.startswith("collectjob_") and "{" in line:
            labels = line[line.index("{") + 1 : line.index("}")]
            names = {pair.split("=")[0] for pair in labels.split(",")} - {"le"}
            assert names == {"namespace", "collectjob"}, line


def test_an_unreachable_source_is_retried_visibly_then_fails(worker_cli, free_port, tmp_path):
    closed = f"http://127.0.0.1:{free_port}/orders.csv"
    args = _args(tmp_path, 1024, "--retry-for", "1", "--url-allowlist", "127.0.0.1")
    args[args.index("--source") + 1] = closed
    result = worker_cli.run(*args)
    assert result.returncode == EXIT_PERMANENT_ERROR, result.stderr
    assert "retrying (SourceUnavailable): URLError" in result.stderr
    assert "permanent error: cannot read source" in result.stderr
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["retrying"]["reason"] == "SourceUnavailable"
    assert "Connection refused" in state["retrying"]["message"] and state["error"]


def test_bad_record_size_and_encoding_flags_are_clear_errors(worker_cli, tmp_path) -> None:
    (tmp_path / "source.csv").write_bytes(b'a,b\n1,"' + b"x" * 4000 + b'"\n')
    result = worker_cli.run(*_args(tmp_path, 1024, "--max-record-bytes", "1000"))
    assert result.returncode == EXIT_PERMANENT_ERROR
    assert "the record starting at line 2 (byte 4) is longer than the maximum" in result.stderr
    result = worker_cli.run(*_args(tmp_path, 1024, "--encoding", "rot13"))
    assert result.returncode == EXIT_PERMANENT_ERROR
    assert "unknown source encoding 'rot13'" in result.stderr and "Traceback" not in result.stderr


def test_the_issue_reports_as_a_user_meets_them(worker_cli, tmp_path) -> None:
    """Issue 14's reports: an old-Mac (CR-only) file gives its two rows, not "0 rows"; a
    duplicate header is refused naming the column, with no `_SUCCESS`."""
    (tmp_path / "source.csv").write_bytes(b"a,b\r1,2\r3,4\r")
    result = worker_cli.run(*_args(tmp_path, 1024, "--sink-format", "jsonl"))
    assert result.returncode == EXIT_OK, result.stderr
    assert "done: byte 12 of 12 (100.0%), 2 rows, 0 rejected" in result.stderr
    parts = sorted((tmp_path / "sink").glob("part-*.jsonl"))
    assert [json.loads(line) for p in parts for line in p.read_text().splitlines()] == [
        {"a": "1", "b": "2"},
        {"a": "3", "b": "4"},
    ]

    shutil.rmtree(tmp_path / "sink")
    (tmp_path / "state.json").unlink()
    (tmp_path / "source.csv").write_bytes(b"a,a\n1,2\n")
    result = worker_cli.run(*_args(tmp_path, 1024, "--sink-format", "parquet"))
    assert result.returncode == EXIT_PERMANENT_ERROR
    assert "names a column more than once ('a' at columns 1, 2)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "sink" / "_SUCCESS").exists()


def test_local_writes_parquet_without_statistics_when_asked(worker_cli, tmp_path) -> None:
    (tmp_path / "source.csv").write_bytes(b"a,b\n1,2\n3,4\n")
    result = worker_cli.run(*_args(tmp_path, 1024, "--sink-format", "parquet", "--no-statistics"))
    assert result.returncode == EXIT_OK, result.stderr
    [part] = sorted((tmp_path / "sink").glob("part-*.parquet"))
    group = pq.ParquetFile(part).metadata.row_group(0)
    assert [group.column(i).is_stats_set for i in range(2)] == [False, False]
    assert pq.read_table(part).to_pylist() == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]
