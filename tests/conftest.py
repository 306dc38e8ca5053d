"""Fixtures shared by every test folder: the real local cluster and waiting on conditions.

The cluster is started once per session (or reused if `make cluster` already runs it) and
always reached through the local kubeconfig, passed explicitly; it is never torn down here
so that a second run starts in seconds (`make cluster-down` stops it).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from localcluster.client import Cluster
from localcluster.controlplane import ControlPlane
from localcluster.image import build as build_image
from localcluster.image import processors_image
from localcluster.podsandbox import RUNTIME_LABEL

# The operator fixtures serve the cluster tests and the benchmarks alike.
pytest_plugins = ["storage_fixtures", "operator_fixtures", "plugin_fixtures"]

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
# Every test namespace asks the local node for containers, whatever runtime the node defaults
# to: the suite never runs a pod as a host process (the node's fallback).
CONTAINERS = {RUNTIME_LABEL: "container"}


def poll(predicate: Callable[[], Any], timeout: float = 30, message: str = "", interval=0.1) -> Any:
    """Return the first truthy value of `predicate`, or fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # keep polling through transient API errors, report the last one
            last_error = e
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            pytest.fail(f"timed out after {timeout}s waiting for {message or predicate}{detail}")
        time.sleep(interval)


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    return poll


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    # The project's image for every pod, and one with the example and test processors
    # (built once, then reused).
    build_image()
    processors_image()
    plane = ControlPlane()
    plane.ensure_up()
    cluster = Cluster(paths=plane.paths, server=plane.server)
    # A cluster-wide operator left by `make demo` would race the tests' own operators.
    cluster.kubectl(
        "delete",
        "namespace",
        "collectjob-system",
        "--ignore-not-found",
        "--wait=true",
        "--timeout=120s",
        timeout=150,
    )
    return cluster


@pytest.fixture(scope="session")
def core_api(cluster: Cluster) -> client.CoreV1Api:
    return client.CoreV1Api(cluster.api_client())


@pytest.fixture
def make_namespace(cluster: Cluster, core_api: client.CoreV1Api) -> Iterator[Callable[..., str]]:
    """Create namespaces (restricted Pod Security by default) that are deleted after the test;
    their pods run in containers."""
    created: list[str] = []

    def make(labels: dict[str, str] | None = None) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        labels = {**(RESTRICTED if labels is None else labels), **CONTAINERS}
        meta = client.V1ObjectMeta(name=name, labels=labels)
        core_api.create_namespace(client.V1Namespace(metadata=meta))
        created.append(name)
        poll(
            lambda: core_api.read_namespaced_service_account("default", name),
            timeout=90,
            message=f"the default ServiceAccount in namespace {name}",
        )
        return name

    yield make
    for name in created:
        try:
            core_api.delete_namespace(name)
        except client.ApiException as e:
            if e.status != 404:
                raise


@pytest.fixture
def namespace(make_namespace: Callable[..., str]) -> str:
    return make_namespace()
