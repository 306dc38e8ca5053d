"""Builders for CollectJob bodies and observed worlds, shared by the operator's unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from collectjob_operator.decisions import PodView, World
from collectjob_operator.job import CollectJob, JobRef

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def job_body(
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    name: str = "orders",
    generation: int = 1,
) -> dict[str, Any]:
    return {
        "apiVersion": "collect.dev/v1alpha1",
        "kind": "CollectJob",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "uid": "0f4c5e2a-1111-2222-3333-444455556666",
            "generation": generation,
            "resourceVersion": "1",
        },
        "spec": {
            "source": {"url": "file:///data/orders.csv"},
            "sink": {"url": "file:///data/out", "format": "jsonl"},
            **(spec or {}),
        },
        "status": status or {},
    }


@pytest.fixture
def make_job() -> Callable[..., CollectJob]:
    def make(**kwargs: Any) -> CollectJob:
        return CollectJob.from_body(job_body(**kwargs))

    return make


@pytest.fixture
def world() -> Callable[..., World]:
    """A World at NOW; `pods` takes (name, running, terminating, restarts) shorthands."""

    def make(pods: tuple[tuple[str, bool, bool, int], ...] = (), **kwargs: Any) -> World:
        views = tuple(
            PodView(n, running, terminating, restarts) for n, running, terminating, restarts in pods
        )
        kwargs.setdefault("checkpoint_configmap", "orders-checkpoint")
        return World(now=kwargs.pop("now", NOW), pods=views, **kwargs)

    return make


class FakeKube:
    """An in-memory stand-in for kube.Kube: objects by (kind, namespace, name), with
    generations and resource versions bumped on every write, and a log of calls."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.events: list[str] = []
        self.status_patches: list[dict[str, Any]] = []
        self.job_reads: list[str] = []
        """The name of every job a reconcile looked up in the cache, in order."""
        self.job = job
        self._version = 1

    def _store(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        meta = obj["metadata"]
        key = (obj["kind"], meta["namespace"], meta["name"])
        old = self.objects.get(key)
        generation = old["metadata"]["generation"] + 1 if old else 1
        stored = {
            **obj,
            "metadata": {**meta, "generation": generation, "resourceVersion": str(self._version)},
        }
        self.objects[key] = stored
        return stored

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", kind))
        return self.objects.get((kind, namespace, name))

    def create(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append(("create", manifest["kind"]))
        meta = manifest["metadata"]
        if (manifest["kind"], meta["namespace"], meta["name"]) in self.objects:
            return None
        return self._store(manifest)

    def apply(self, manifest: dict[str, Any], resource_version: str) -> dict[str, Any] | None:
        """Server-side apply with its resourceVersion precondition: None on a conflict."""
        self.calls.append(("apply", manifest["kind"]))
        meta = manifest["metadata"]
        actual = self.objects.get((manifest["kind"], meta["namespace"], meta["name"]))
        if actual is None or actual["metadata"]["resourceVersion"] != resource_version:
            return None
        merged_meta = {**actual["metadata"], **meta}
        return self._store({**actual, **manifest, "metadata": merged_meta})

    def indices(self) -> dict[str, Any]:
        """The objects as kopf's indexes would hold them (the job, labelled children)."""
        children = ("ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Deployment")
        children += ("ReplicaSet", "Pod")
        return {"CollectJob": _JobIndex(self), **{kind: _Index(self, kind) for kind in children}}

    def add_pod(self, name: str, phase: str = "Running") -> None:
        labels = {"collect.dev/job": "orders", "app.kubernetes.io/component": "worker"}
        self._store(
            {
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "team-a", "labels": labels},
                "status": {"phase": phase},
            }
        )

    def delete_pod_now(self, namespace: str, name: str) -> None:
        self.calls.append(("delete", name))
        self.objects.pop(("Pod", namespace, name), None)

    def patch_job_status(
        self, ref: Any, status: dict[str, Any], resource_version: str
    ) -> dict[str, Any] | None:
        """A merge patch conditional on the resourceVersion: None on a conflict."""
        if self.job["metadata"]["resourceVersion"] != resource_version:
            return None
        self.status_patches.append(status)
        self._version += 1
        meta = {**self.job["metadata"], "resourceVersion": str(self._version)}
        self.job = {**self.job, "metadata": meta, "status": status}
        return self.job

    def post_event(self, event: Any) -> None:
        self.events.append(event.what.reason)

    def deployment(self) -> dict[str, Any]:
        return self.objects[("Deployment", "team-a", "orders-worker")]

    def roll_out(self) -> None:
        """Act as the deployment controller: observe the spec, count the pods it has."""
        dep = self.deployment()
        pods = sum(1 for kind, _, _ in self.objects if kind == "Pod")
        dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": pods}


class _Index(Mapping[JobRef, list[dict[str, Any]]]):
    """A live view of FakeKube's objects of one kind, keyed by the job they are labelled
    with, as a kopf index."""

    def __init__(self, kube: FakeKube, kind: str) -> None:
        self._kube, self._kind = kube, kind

    def _grouped(self) -> dict[JobRef, list[dict[str, Any]]]:
        grouped: dict[JobRef, list[dict[str, Any]]] = {}
        for (kind, namespace, _), obj in self._kube.objects.items():
            job = (obj["metadata"].get("labels") or {}).get("collect.dev/job")
            if kind == self._kind and job:
                grouped.setdefault(JobRef(namespace, job), []).append(obj)
        return grouped

    def __getitem__(self, key: JobRef) -> list[dict[str, Any]]:
        return self._grouped()[key]

    def __iter__(self) -> Iterator[JobRef]:
        return iter(self._grouped())

    def __len__(self) -> int:
        return len(self._grouped())


class _JobIndex(Mapping[JobRef, list[dict[str, Any]]]):
    """FakeKube's one job as kopf's index of CollectJobs holds it; records every lookup."""

    def __init__(self, kube: FakeKube) -> None:
        self._kube = kube

    def _ref(self) -> JobRef:
        meta = self._kube.job["metadata"]
        return JobRef(meta["namespace"], meta["name"])

    def __contains__(self, key: object) -> bool:
        """What a lookup asks first: recorded here, once per lookup."""
        assert isinstance(key, JobRef)
        self._kube.job_reads.append(key.name)
        return key == self._ref()

    def __getitem__(self, key: JobRef) -> list[dict[str, Any]]:
        if key != self._ref():
            raise KeyError(key)
        return [self._kube.job]

    def __iter__(self) -> Iterator[JobRef]:
        return iter([self._ref()])

    def __len__(self) -> int:
        return 1


@pytest.fixture
def fake_kube() -> Callable[..., FakeKube]:
    def make(**kwargs: Any) -> FakeKube:
        return FakeKube(job_body(**kwargs))

    return make
