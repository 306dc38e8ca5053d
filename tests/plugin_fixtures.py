"""Fixtures for the kubectl plugin's tests and benchmark: running the real plugin as a
person does, and submitting jobs with provenance through the importable client."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from collectjob_api.client import CollectJobClient, Job
from localcluster.client import Cluster
from operator_fixtures import write_csv
from storage_fixtures import DataVolume

PLUGIN = Path(sys.executable).parent / "kubectl-collectjob"


def plugin(
    cluster: Cluster, namespace: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`kubectl-collectjob COMMAND --kubeconfig LOCAL -n NAMESPACE ARGS...`."""
    argv = [
        str(PLUGIN),
        *args[:1],
        "--kubeconfig",
        str(cluster.kubeconfig),
        "-n",
        namespace,
        *args[1:],
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def jobs_api(cluster: Cluster) -> Iterator[CollectJobClient]:
    api = CollectJobClient.from_kubeconfig(str(cluster.kubeconfig))
    yield api
    api.close()


@pytest.fixture
def jobs(
    jobs_api: CollectJobClient, namespace: str, crd: None, tmp_path: Path, data_volume: DataVolume
) -> Callable[..., Job]:
    """Submit a job over a fresh CSV through the client, labelled client pipeline-a and
    the given request; its worker mounts the test's temp dir (storage_fixtures.py)."""

    def submit(name: str, rows: int = 2000, request: str = "r-1", **spec: Any) -> Job:
        data = tmp_path / name
        data.mkdir()
        source = write_csv(data / "input.csv", rows)
        body = {
            "source": {"url": source.as_uri()},
            "sink": {"url": (data / "out").as_uri(), "format": "jsonl"},
            "chunkBytes": 1 << 20,
            **spec,
        }
        body["worker"] = data_volume.into(spec.get("worker"))
        return jobs_api.submit(namespace, name, body, client_name="pipeline-a", request=request)

    return submit
