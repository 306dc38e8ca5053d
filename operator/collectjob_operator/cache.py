"""A job's children as kopf's watches last streamed them: reads without an API call.

handlers.py registers one kopf index per child kind. kopf fills every index from its
watch (label-selected on the server, see settings.py) and runs no handler before all of
them hold the initial listing, so an object missing here was really missing a moment ago.
The copies may lag behind the API by the watch's latency; the reconciler accounts for
that where it matters (its writes carry the resourceVersion they were based on, and it
looks an object up with a GET before creating a Deployment that is not cached).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from collectjob_api.contract import LABEL_COMPONENT, LABEL_JOB, WORKER_COMPONENT
from collectjob_operator.job import JobRef

Obj = dict[str, Any]


@dataclass(frozen=True)
class ChildKind:
    kind: str
    group: str
    version: str
    plural: str


CHILD_KINDS = (
    ChildKind("ConfigMap", "", "v1", "configmaps"),
    ChildKind("ServiceAccount", "", "v1", "serviceaccounts"),
    ChildKind("Role", "rbac.authorization.k8s.io", "v1", "roles"),
    ChildKind("RoleBinding", "rbac.authorization.k8s.io", "v1", "rolebindings"),
    ChildKind("Deployment", "apps", "v1", "deployments"),
    ChildKind("Pod", "", "v1", "pods"),
)

Indices = Mapping[str, Mapping[JobRef, Iterable[Obj]]]
"""Kind -> kopf index: the job a child is labelled with -> the copies of its children."""


def index_entry(
    kind: str, namespace: str | None, labels: Mapping[str, str], body: Mapping[str, Any]
) -> dict[JobRef, Obj]:
    """What one child contributes to its kind's index: a plain copy keyed by its job.

    managedFields are dropped: they are most of a Deployment's size and never read.
    """
    meta = {k: v for k, v in body.get("metadata", {}).items() if k != "managedFields"}
    copy = {**body, "kind": kind, "metadata": meta}
    return {JobRef(namespace or "", labels[LABEL_JOB]): copy}


class ChildCache:
    def __init__(self, indices: Indices) -> None:
        self._indices = indices

    def _objects(self, kind: str, ref: JobRef) -> Iterable[Obj]:
        index = self._indices.get(kind)
        if index is None or ref not in index:
            return ()
        return index[ref]

    def get(self, kind: str, ref: JobRef, name: str) -> Obj | None:
        """The cached child of `kind` called `name` that is labelled with `ref`'s job."""
        return next((o for o in self._objects(kind, ref) if o["metadata"]["name"] == name), None)

    def worker_pods(self, ref: JobRef) -> list[Obj]:
        return [
            pod
            for pod in self._objects("Pod", ref)
            if (pod["metadata"].get("labels") or {}).get(LABEL_COMPONENT) == WORKER_COMPONENT
        ]
