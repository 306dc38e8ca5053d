"""The CollectJobs and their children as kopf's watches last streamed them: reads without
an API call.

handlers.py registers one kopf index for the jobs and one per child kind. kopf fills every
index from its watch (children label-selected on the server, see settings.py), updates it
before it runs the handlers of the same event, and runs no handler before all of them hold
the initial listing, so an object missing here was really missing a moment ago. The copies
may lag behind the API by the watch's latency; the reconciler accounts for that where it
matters: every write carries the resourceVersion it was based on (a stale read costs a
conflict and another pass, never a wrong write), it remembers the job as its own last
status write left it, and it looks a Deployment up with a GET when the job has run before
and none is cached.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from collectjob_api.contract import KIND, LABEL_COMPONENT, WORKER_COMPONENT
from collectjob_operator.job import JobRef

Obj = dict[str, Any]
"""A Kubernetes object as the API and the watches hand it over: parsed JSON."""


@dataclass(frozen=True)
class ChildKind:
    kind: str
    group: str
    version: str
    plural: str


JOB_INDEX = KIND
CHILD_KINDS = (
    ChildKind("ConfigMap", "", "v1", "configmaps"),
    ChildKind("ServiceAccount", "", "v1", "serviceaccounts"),
    ChildKind("Role", "rbac.authorization.k8s.io", "v1", "roles"),
    ChildKind("RoleBinding", "rbac.authorization.k8s.io", "v1", "rolebindings"),
    ChildKind("Deployment", "apps", "v1", "deployments"),
    ChildKind("ReplicaSet", "apps", "v1", "replicasets"),
    ChildKind("Pod", "", "v1", "pods"),
)
"""Each watched with the children's label selector. ReplicaSets are not the operator's (the
deployment controller makes them from the worker Deployment, whose pod labels they carry):
they are only read, to see a scale-down complete sooner (scale.py)."""

Indices = Mapping[str, Mapping[JobRef, Iterable[Obj]]]
"""Kind -> kopf index: the job (a child's label, a job's own name) -> the copies."""


def index_entry(
    kind: str, namespace: str | None, job: str, body: Mapping[str, Any]
) -> dict[JobRef, Obj]:
    """What one object contributes to its kind's index: a plain copy keyed by its job.

    managedFields are dropped: they are most of a Deployment's size and never read.
    """
    meta = {k: v for k, v in body.get("metadata", {}).items() if k != "managedFields"}
    copy = {**body, "kind": kind, "metadata": meta}
    return {JobRef(namespace or "", job): copy}


class WatchCache:
    def __init__(self, indices: Indices) -> None:
        self._indices = indices

    def job(self, ref: JobRef) -> Obj | None:
        """The CollectJob `ref` as last streamed, None when it does not exist."""
        return next(iter(self._objects(JOB_INDEX, ref)), None)

    def _objects(self, kind: str, ref: JobRef) -> Iterable[Obj]:
        index = self._indices.get(kind)
        if index is None or ref not in index:
            return ()
        return index[ref]

    def get(self, kind: str, ref: JobRef, name: str) -> Obj | None:
        """The cached child of `kind` called `name` that is labelled with `ref`'s job."""
        return next((o for o in self._objects(kind, ref) if o["metadata"]["name"] == name), None)

    def replicasets(self, ref: JobRef) -> list[Obj]:
        return list(self._objects("ReplicaSet", ref))

    def worker_pods(self, ref: JobRef) -> list[Obj]:
        return [
            pod
            for pod in self._objects("Pod", ref)
            if (pod["metadata"].get("labels") or {}).get(LABEL_COMPONENT) == WORKER_COMPONENT
        ]
